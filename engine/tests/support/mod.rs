//! Support for end-to-end tests that drive the real `plue` binary as separate processes:
//! a [`Sandbox`] per test (a temporary directory, the processes started in it, and a
//! cleanup that leaves none behind), engines started on a port and awaited on `/healthz`,
//! and small pollers over the HTTP API, each with a deadline.
//!
//! Invariants:
//! - Every process a test starts carries `PLUE_TEST_SANDBOX=<its sandbox directory>` in its
//!   environment, and so does everything it starts in turn (local-pool runners, step
//!   processes), because they inherit it. Dropping the [`Sandbox`] SIGKILLs every process
//!   carrying that mark, so a runner the engine left behind on purpose (they outlive their
//!   engine so a restarted one can continue) or a step orphaned by a killed runner never
//!   outlives the test.
//! - The test process is a child subreaper, so those orphans become its children and their
//!   zombies are reaped here instead of accumulating under an init that may not reap.
//! - Every wait has a deadline and fails with what the processes wrote to stderr.
//!
//! It also starts in-process engines (`server::start` on `127.0.0.1:0`) and their runs,
//! and opens one store per available backend, for the tests that need no `plue` process.
//!
//! Why one file past ~600 lines: it is the one support module of the process-level tests
//! (shared set-up lives here, never copied into a test file); its sections are the sandbox,
//! engines, HTTP pollers and workflow builders.

pub(crate) mod issue_to_pr;
pub(crate) mod mcp;
pub(crate) mod real_gitea;
pub(crate) mod real_kube;
pub(crate) mod sign_in;

use std::collections::BTreeSet;
use std::fs::File;
use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use evaluator::plan::{Plan, Step};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use plue_core::executor::Executor;
use plue_server::server::{self as engine_server, EngineConfig, RunningEngine};
use plue_store::{NewRepo, NewRun, NewUser, RunRepo, Store};
use plue_types::protocol as wire;
use plue_types::status::RunState;
use serde_json::Value;

/// The Messages API key `llm` steps of [`Sandbox::plue_run_llm`] get.
pub(crate) const LLM_KEY: &str = "sk-ant-e2e-7c1d2e3f4a5b";

/// The environment variable that marks the processes of one sandbox.
const MARK_VAR: &str = "PLUE_TEST_SANDBOX";

/// A step `slow` that prints `started`, then sleeps a minute: it keeps its run running.
pub(crate) const SLOW_STEP: &str = "Step.bash('slow', 'echo started; sleep 60')";

/// A registration token for engines under test (at least 16 characters).
pub(crate) const RUNNER_TOKEN: &str = "reliability-test-runner-token";

/// The admin token engines under test are started with; [`client`] sends it.
pub(crate) const ADMIN_TOKEN: &str = "admin-token-of-the-test-engines";

/// How long an engine may take to answer `/healthz` after it is started.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Serialises the end-to-end tests (one binary, `tests/e2e.rs`). They start engines, runners and a million-line step
/// on machines with as few as two cores; a test that declares a runner lost after 1.5 s of
/// silence must not compete for the CPU with one that streams a million lines.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the suite-wide test lock (see [`SERIAL`]).
pub(crate) async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// [`serial`] for a test that has no runtime of its own.
pub(crate) fn serial_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.blocking_lock()
}

/// A temporary directory plus every process started in it; see the module invariants.
pub(crate) struct Sandbox {
    dir: tempfile::TempDir,
    children: Mutex<Vec<Spawned>>,
}

struct Spawned {
    name: String,
    child: Child,
}

impl Sandbox {
    pub(crate) fn new(name: &str) -> Sandbox {
        static SUBREAPER: Once = Once::new();
        SUBREAPER.call_once(|| {
            // Without it orphans go to init; cleanup still kills them by their mark.
            let _ = nix::sys::prctl::set_child_subreaper(true);
        });
        let dir = tempfile::Builder::new()
            .prefix(&format!("plue-{name}-"))
            .tempdir()
            .expect("a temporary directory");
        // Searchable, not listable: runners started as root put attempt directories for
        // their unprivileged step users below it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod the sandbox");
        Sandbox {
            dir,
            children: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// A file in the sandbox's `shared/` directory, created empty and writable by everyone,
    /// where steps — which a root runner runs as unprivileged users, each attempt another
    /// one — may write what the test reads.
    pub(crate) fn shared(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.path("shared");
        if !dir.exists() {
            std::fs::create_dir(&dir).expect("mkdir shared");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .expect("chmod shared");
        }
        let file = dir.join(name);
        std::fs::write(&file, "").expect("create a shared file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))
            .expect("chmod a shared file");
        file
    }

    /// Writes `contents` to `relative` (creating directories) and returns the path.
    pub(crate) fn write(&self, relative: &str, contents: &str) -> PathBuf {
        write_files(self.dir.path(), &[(relative, contents)]);
        self.path(relative)
    }

    /// Writes `contents` to `name` with mode 0600, as a key file must be (`plue serve`
    /// refuses one other users may read); the path.
    pub(crate) fn write_private(&self, name: &str, contents: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let file = self.write(name, contents);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600 a key file");
        file
    }

    /// Writes workflow `name` of `steps` ([`workflow_source`]) to `ws/NAME.plue.py`; the path.
    pub(crate) fn write_workflow<S: AsRef<str>>(&self, name: &str, steps: &[S]) -> PathBuf {
        let path = format!("ws/{name}.plue.py");
        self.write(&path, &workflow_source(name, steps))
    }

    /// `plue ARGS` in the sandbox directory, marked, without colours.
    pub(crate) fn plue(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_plue"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env(MARK_VAR, self.dir.path())
            // Local runners' work directories in the sandbox: a root runner's step sees only
            // the entry of /tmp holding its work directory, so `shared/` stays in reach.
            .env("TMPDIR", self.dir.path())
            .env("NO_COLOR", "1")
            .env("PLUE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("PLUE_TOKEN", ADMIN_TOKEN)
            .env("PLUE_SECRET_KEY", "secret-key-of-the-test-sandbox")
            .stdin(Stdio::null());
        command
    }

    /// Runs `plue ARGS` in the sandbox to completion: its stdout, or a panic with stderr.
    pub(crate) fn plue_ok(&self, args: &[&str]) -> String {
        let output = self.plue(args).output().expect("plue runs");
        assert!(
            output.status.success(),
            "plue {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    }

    /// `plue serve --check-config --pool-config FILE EXTRA` in the sandbox, run to its end.
    pub(crate) fn check_pool_config(&self, file: &Path, extra: &[&str]) -> std::process::Output {
        let file = file.to_str().expect("a UTF-8 path");
        let mut args = vec!["serve", "--check-config", "--pool-config", file];
        args.extend_from_slice(extra);
        self.plue(&args)
            .output()
            .expect("plue serve --check-config")
    }

    /// `plue run ARGS` in the sandbox without a data directory, its `llm` steps talking to
    /// the scripted Messages API at `base_url` (the runners' own `ANTHROPIC_BASE_URL`) with
    /// the secret `ANTHROPIC_API_KEY` = [`LLM_KEY`]; waits for it to end.
    pub(crate) fn plue_run_llm(&self, base_url: &str, args: &[&str]) -> std::process::Output {
        self.plue(&["run"])
            .args(args)
            .args(["--secret", &format!("ANTHROPIC_API_KEY={LLM_KEY}")])
            .env_remove("PLUE_DATA_DIR")
            .env_remove("ANTHROPIC_API_KEY")
            .env("ANTHROPIC_BASE_URL", base_url)
            .output()
            .expect("plue run")
    }

    /// Starts `command` with stdout and stderr in `NAME.out` / `NAME.err`; returns its pid.
    pub(crate) fn spawn(&self, name: &str, mut command: Command) -> u32 {
        let out = File::create(self.path(&format!("{name}.out"))).expect("stdout file");
        let err = File::create(self.path(&format!("{name}.err"))).expect("stderr file");
        let child = command
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let pid = child.id();
        self.lock_children().push(Spawned {
            name: name.to_string(),
            child,
        });
        pid
    }

    /// Like [`Sandbox::spawn`], but stdout is a pipe handed to the caller.
    pub(crate) fn spawn_piped(&self, name: &str, mut command: Command) -> (u32, ChildStdout) {
        let err = File::create(self.path(&format!("{name}.err"))).expect("stderr file");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let pid = child.id();
        self.lock_children().push(Spawned {
            name: name.to_string(),
            child,
        });
        (pid, stdout)
    }

    /// Waits for the process started as `pid` to exit; panics after `limit`.
    pub(crate) async fn wait_exit(&self, pid: u32, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            let status = {
                let mut children = self.lock_children();
                let spawned = children
                    .iter_mut()
                    .find(|s| s.child.id() == pid)
                    .unwrap_or_else(|| panic!("pid {pid} was not started by this sandbox"));
                spawned.child.try_wait().expect("waiting for a child")
            };
            if let Some(status) = status {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pid {pid} still runs after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process started as `pid` has exited (it is reaped if so).
    pub(crate) fn exited(&self, pid: u32) -> bool {
        let mut children = self.lock_children();
        match children.iter_mut().find(|s| s.child.id() == pid) {
            Some(spawned) => !matches!(spawned.child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// SIGKILLs a process this sandbox started, and reaps it.
    pub(crate) fn kill9(&self, pid: u32) {
        let mut children = self.lock_children();
        let spawned = children
            .iter_mut()
            .find(|s| s.child.id() == pid)
            .unwrap_or_else(|| panic!("pid {pid} was not started by this sandbox"));
        let _ = spawned.child.kill();
        let _ = spawned.child.wait();
    }

    /// The stderr of every process started so far (the tail of each), for failure messages.
    pub(crate) fn diagnostics(&self) -> String {
        let names: Vec<String> = self
            .lock_children()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let mut text = String::new();
        for name in names {
            let err =
                std::fs::read_to_string(self.path(&format!("{name}.err"))).unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(40).collect();
            text.push_str(&format!(
                "--- {name} stderr (last {} lines) ---\n",
                tail.len()
            ));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        let runners = self.path("data/runners.log");
        if let Ok(log) = std::fs::read_to_string(runners) {
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            text.push_str("--- data/runners.log (tail) ---\n");
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Live processes (not this one) carrying this sandbox's mark.
    pub(crate) fn marked_processes(&self) -> Vec<i32> {
        let mark = format!("{MARK_VAR}={}", self.dir.path().display());
        let me = std::process::id() as i32;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != me)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|environ| environ.split(|b| *b == 0).any(|var| var == mark.as_bytes()))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// `plue run WORKFLOW --runners N` on the sandbox's `data` directory, writing its
    /// `summary.json` (see [`Sandbox::summary`]), plus `extra` arguments.
    pub(crate) fn plue_run_with_summary(
        &self,
        workflow: &str,
        runners: &str,
        extra: &[&str],
    ) -> Command {
        let (data, summary) = (self.path("data"), self.path("summary.json"));
        let mut command = self.plue(&[
            "run",
            workflow,
            "--runners",
            runners,
            "--data-dir",
            data.to_str().expect("a UTF-8 sandbox path"),
            "--summary-json",
            summary.to_str().expect("a UTF-8 sandbox path"),
        ]);
        command.args(extra);
        command
    }

    /// [`Sandbox::plue_run_llm`] of the sandbox's `w.plue.py` with `runners` local runners,
    /// writing `summary.json` (see [`Sandbox::summary`]), plus `extra` arguments.
    pub(crate) fn plue_run_llm_summary(
        &self,
        base_url: &str,
        runners: &str,
        extra: &[&str],
    ) -> std::process::Output {
        let mut args = vec![
            "w.plue.py",
            "--runners",
            runners,
            "--summary-json",
            "summary.json",
        ];
        args.extend_from_slice(extra);
        self.plue_run_llm(base_url, &args)
    }

    /// The `--summary-json` document `plue run` wrote to `summary.json` in the sandbox.
    pub(crate) fn summary(&self) -> Value {
        let text = std::fs::read_to_string(self.path("summary.json")).expect("summary.json");
        serde_json::from_str(&text).expect("summary.json is JSON")
    }

    /// Starts `plue serve --listen 127.0.0.1:PORT ARGS` and waits for `/healthz`. A start
    /// that fails at once (the port of a just-killed engine not yet free) is retried.
    pub(crate) async fn serve(&self, name: &str, port: u16, args: &[&str]) -> Engine {
        self.serve_with_env(name, port, args, &[]).await
    }

    /// [`Sandbox::serve`] as `engine` on a free port with `args`.
    pub(crate) async fn serve_engine(&self, args: &[&str]) -> Engine {
        self.serve("engine", free_port(), args).await
    }

    /// Serves `engine` on a free port with `args` and starts a run of `workflow` in the
    /// workspace `ws`: the engine, the HTTP client that started it and the run's id.
    pub(crate) async fn serve_and_run(
        &self,
        args: &[&str],
        workflow: &Path,
    ) -> (Engine, reqwest::Client, i64) {
        self.serve_and_run_with_env(args, &[], workflow).await
    }

    /// [`Sandbox::serve_and_run`] with extra environment variables for the engine.
    pub(crate) async fn serve_and_run_with_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        workflow: &Path,
    ) -> (Engine, reqwest::Client, i64) {
        let engine = self.serve_with_env("engine", free_port(), args, env).await;
        let http = client();
        let run_id = start_run(&http, &engine.url, workflow, &self.path("ws")).await;
        (engine, http, run_id)
    }

    /// [`Sandbox::serve`] on a free port with its data in the sandbox directory `data`, one
    /// local runner and 200 ms heartbeats, plus `extra` arguments.
    pub(crate) async fn serve_one_runner(&self, name: &str, data: &str, extra: &[&str]) -> Engine {
        let data = self.path(data);
        let data = data.to_str().expect("a UTF-8 sandbox path");
        let mut args = vec![
            "--data-dir",
            data,
            "--runners",
            "1",
            "--heartbeat-ms",
            "200",
        ];
        args.extend_from_slice(extra);
        self.serve(name, free_port(), &args).await
    }

    /// [`Sandbox::serve`] as `engine` on a free port with its data in the sandbox directory
    /// `data` and `runners` local runners, plus `extra` arguments.
    pub(crate) async fn serve_local(&self, runners: &str, extra: &[&str]) -> Engine {
        self.serve_local_with_env(runners, extra, &[]).await
    }

    /// [`Sandbox::serve_local`] with extra environment variables for the engine.
    pub(crate) async fn serve_local_with_env(
        &self,
        runners: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Engine {
        let data = self.path("data");
        let data = data.to_str().expect("a UTF-8 sandbox path");
        let mut args = vec!["--data-dir", data, "--runners", runners];
        args.extend_from_slice(extra);
        self.serve_with_env("engine", free_port(), &args, env).await
    }

    /// [`Sandbox::serve`] with extra environment variables for the engine.
    pub(crate) async fn serve_with_env(
        &self,
        name: &str,
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Engine {
        let listen = format!("127.0.0.1:{port}");
        let url = format!("http://{listen}");
        let client = client();
        let deadline = Instant::now() + START_DEADLINE;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Engines under test may run workflow files of their sandbox (POST /api/runs).
            let root = self.dir.path().to_str().expect("a UTF-8 sandbox path");
            let mut all = vec![
                "serve",
                "--listen",
                &listen,
                "--local-workflows",
                root,
                "--pass-env",
                MARK_VAR,
            ];
            all.extend_from_slice(args);
            let mut command = self.plue(&all);
            command.envs(env.iter().copied());
            let pid = self.spawn(&format!("{name}-{attempt}"), command);
            loop {
                let healthy = client
                    .get(format!("{url}/healthz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if healthy && !self.exited(pid) {
                    return Engine { url, pid };
                }
                if self.exited(pid) || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                Instant::now() <= deadline,
                "{name} did not answer /healthz on {url} within {START_DEADLINE:?}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// [`wait_final`], asserting that the run succeeded (the failure shows the run and
    /// [`Sandbox::diagnostics`]); the run.
    pub(crate) async fn wait_succeeded(
        &self,
        client: &reqwest::Client,
        engine: &str,
        run_id: i64,
        limit: Duration,
    ) -> Value {
        let run = wait_final(client, engine, run_id, limit).await;
        assert_eq!(run["status"], "succeeded", "{run}\n{}", self.diagnostics());
        run
    }

    /// Starts a remote `plue runner` against `engine` with its own work directory.
    pub(crate) fn runner(&self, name: &str, engine: &str, extra: &[&str]) -> u32 {
        let work = self.path(&format!("work-{name}"));
        let work = work.to_str().expect("UTF-8 path");
        let mut args = vec![
            "runner",
            "--engine",
            engine,
            "--token",
            RUNNER_TOKEN,
            "--name",
            name,
            "--work-dir",
            work,
            "--give-up-after",
            "30",
            "--pass-env",
            MARK_VAR,
        ];
        args.extend_from_slice(extra);
        self.spawn(name, self.plue(&args))
    }

    fn lock_children(&self) -> MutexGuard<'_, Vec<Spawned>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        for spawned in self.lock_children().iter_mut() {
            let _ = spawned.child.kill();
            let _ = spawned.child.wait();
        }
        // Killing a runner orphans its step; keep sweeping until nothing marked is left.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut killed = BTreeSet::new();
        loop {
            let left = self.marked_processes();
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "processes of {} survived cleanup: {left:?}",
                    self.dir.path().display()
                );
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed.insert(pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        reap(&killed);
    }
}

/// Reaps those of `pids` that became our children (we are a subreaper) once they are dead.
fn reap(pids: &BTreeSet<i32>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut waiting: Vec<i32> = pids.iter().copied().collect();
    while !waiting.is_empty() && Instant::now() < deadline {
        waiting.retain(|pid| {
            matches!(
                waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG)),
                Ok(nix::sys::wait::WaitStatus::StillAlive)
            )
        });
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pids of the live (not zombie) processes whose parent is `pid`, from `/proc`.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) == Some(&pid.to_string().as_str()) && fields[0] != "Z" {
            children.push(child);
        }
    }
    children
}

/// Whether process `pid` exists and is not a zombie, from `/proc`.
pub(crate) fn alive(pid: impl std::fmt::Display) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The pid of the `plue runner` process registered as `name` (a local pool's runner, or
/// one a test started), from `/proc`.
pub(crate) fn runner_pid(name: &str) -> Option<i32> {
    let wanted = format!("\0--name\0{name}\0");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("\0runner\0") && cmdline.contains(&wanted)).then_some(pid)
        })
}

/// A running `plue serve`.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    /// `http://127.0.0.1:PORT`
    pub(crate) url: String,
    pub(crate) pid: u32,
}

/// What a finished process printed: its stdout, then its stderr.
pub(crate) fn printed(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A finished process's stdout, lossily as text.
pub(crate) fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A finished process's stderr, lossily as text.
pub(crate) fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `files` (path relative to `dir`, text) below `dir`, creating directories.
pub(crate) fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// A fresh temporary directory holding `files` (path relative to it, text).
pub(crate) fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_files(dir.path(), files);
    dir
}

/// What step `id` printed in `plue run`'s `stdout`, without the printer's own transition
/// lines.
pub(crate) fn step_lines(stdout: &str, id: &str) -> Vec<String> {
    let prefix = format!("{id} ");
    stdout
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split_once(" | ").map(|(_, text)| text.to_string()))
        .filter(|text| {
            !["▶ ", "✓ ", "✗ ", "↻ ", "- skipped", "■ ", "── "]
                .iter()
                .any(|m| text.starts_with(m))
        })
        .collect()
}

/// `plue` outside any sandbox (so unmarked), without colours or an inherited data directory.
pub(crate) fn plain_plue() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_plue"));
    command.env("NO_COLOR", "1").env_remove("PLUE_DATA_DIR");
    command
}

/// [`plain_plue`] `run w.plue.py --runners 1` in `dir`, with `source` written there as
/// `w.plue.py` first: the command, to add environment or arguments to.
pub(crate) fn plue_run_one(dir: &Path, source: &str) -> Command {
    std::fs::write(dir.join("w.plue.py"), source).expect("write w.plue.py");
    let mut command = plain_plue();
    command
        .current_dir(dir)
        .args(["run", "w.plue.py", "--runners", "1"]);
    command
}

/// The arguments of an engine on the shared database `url` with no local runners (remote
/// ones register with [`RUNNER_TOKEN`]), then `extra`, and its own data directory `data`.
pub(crate) fn shared_db_args(url: &str, extra: &[&str], data: &Path) -> Vec<String> {
    let head = ["--database-url", url, "--runners", "0"];
    let token = ["--runner-token", RUNNER_TOKEN];
    let data = ["--data-dir", data.to_str().expect("a UTF-8 data directory")];
    [&head[..], &token, extra, &data]
        .concat()
        .into_iter()
        .map(String::from)
        .collect()
}

/// A connection of the test's own to an engine's SQLite database `path` (its data
/// directory's `plue.db`), waiting up to 10 s for the engine's writes: to read what the API
/// does not show, or change a row under the engine.
pub(crate) fn engine_sqlite(path: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    db.busy_timeout(Duration::from_secs(10))
        .expect("a busy timeout");
    db
}

/// Two different ports on 127.0.0.1 that were free a moment ago.
pub(crate) fn two_free_ports() -> (u16, u16) {
    let a = free_port();
    let b = std::iter::repeat_with(free_port)
        .find(|p| *p != a)
        .expect("a second port");
    (a, b)
}

/// A port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range.
/// A port the kernel hands out (`bind` to port 0) comes from that range, and so does the
/// local port of every outgoing connection: between this call and the engine's own
/// `bind`, any test's client could take it ("Address already in use"). Below the range
/// only another test picking the same port can; each test process starts its search at a
/// place of its own (its pid and the clock) and walks on from there.
pub(crate) fn free_port() -> u16 {
    static NEXT: Mutex<Option<u32>> = Mutex::new(None);
    const LOWEST: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&low| low > LOWEST + 1_000)
        .unwrap_or(32_768);
    let span = ephemeral_low - LOWEST;
    let mut next = NEXT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let start = *next.get_or_insert_with(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        std::process::id().wrapping_mul(7_919).wrapping_add(nanos) % span
    });
    for offset in 0..span {
        let candidate = (start + offset) % span;
        let port = (LOWEST + candidate) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            *next = Some((candidate + 1) % span);
            return port;
        }
    }
    panic!("no free port between {LOWEST} and {ephemeral_low}")
}

pub(crate) fn now_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_millis() as i64
}

/// An HTTP client that sends [`ADMIN_TOKEN`].
pub(crate) fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN_TOKEN}")
            .parse()
            .expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Signs in to the dashboard at `url` with `token`: the `Cookie` header value of the
/// session (`plue_session=…; plue_csrf=…`).
pub(crate) async fn dashboard_session(url: &str, token: &str) -> String {
    let reply = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
        .post(format!("{url}/login"))
        .form(&[("token", token), ("next", "/")])
        .send()
        .await
        .expect("POST /login");
    assert_eq!(reply.status(), 303, "signing in");
    let pairs: Vec<String> = reply
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
        .collect();
    assert!(
        pairs.iter().any(|p| p.starts_with("plue_session=")),
        "{pairs:?}"
    );
    pairs.join("; ")
}

pub(crate) async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "GET {url}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
}

/// The text `GET url` answers (whatever its status).
pub(crate) async fn get_text(client: &reqwest::Client, url: &str) -> String {
    send_text(client.get(url)).await
}

/// Sends `request`; the answer's text (whatever its status).
pub(crate) async fn send_text(request: reqwest::RequestBuilder) -> String {
    request.send().await.unwrap().text().await.unwrap()
}

/// Sends `request`; the answer read as JSON (whatever its status).
pub(crate) async fn send_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> T {
    request.send().await.unwrap().json().await.unwrap()
}

/// Starts a run of `workflow` (an absolute path) on `engine`; returns its id.
pub(crate) async fn start_run(
    client: &reqwest::Client,
    engine: &str,
    workflow: &Path,
    workspace: &Path,
) -> i64 {
    let url = format!("{engine}/api/runs");
    let body = serde_json::json!({"workflow": workflow, "workspace": workspace});
    let response = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("POST /api/runs");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "POST {url}: {status}: {text}");
    let created: Value = serde_json::from_str(&text).expect("JSON");
    created["run_id"].as_i64().expect("run_id")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit` saying `what`.
pub(crate) async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of the dashboard's page at `url` for the session `cookie`.
pub(crate) async fn dashboard_page(url: &str, cookie: &str) -> String {
    reqwest::Client::new()
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The JSON `GET url` answers, or `None` while the engine does not answer with one
/// ([`get_json`] where it must).
pub(crate) async fn poll_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = poll(client, url, Duration::from_secs(5)).await?;
    response.json().await.ok()
}

/// The successful answer to `GET url` within `limit`, or `None` while the engine does not
/// give one.
async fn poll(client: &reqwest::Client, url: &str, limit: Duration) -> Option<reqwest::Response> {
    let response = client.get(url).timeout(limit).send().await.ok()?;
    response.status().is_success().then_some(response)
}

/// The run (`GET /api/runs/{id}`), or `None` while the engine does not answer.
pub(crate) async fn run_view(client: &reqwest::Client, engine: &str, run_id: i64) -> Option<Value> {
    poll_json(client, &format!("{engine}/api/runs/{run_id}")).await
}

/// Waits until the run is final and returns it.
pub(crate) async fn wait_final(
    client: &reqwest::Client,
    engine: &str,
    run_id: i64,
    limit: Duration,
) -> Value {
    wait_for(limit, &format!("run {run_id} to finish"), || async {
        run_view(client, engine, run_id).await.filter(|run| {
            matches!(
                run["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
    })
    .await
}

/// [`wait_final`], asserting that the run succeeded (the failure shows the run); the run.
pub(crate) async fn wait_succeeded(
    client: &reqwest::Client,
    engine: &str,
    run_id: i64,
    limit: Duration,
) -> Value {
    let run = wait_final(client, engine, run_id, limit).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    run
}

/// The step `id` of a run view.
pub(crate) fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {run}"))
}

/// The stored lines of a step (`GET .../logs`, JSON lines), or `None` while the engine does
/// not answer.
pub(crate) async fn log_lines(
    client: &reqwest::Client,
    engine: &str,
    run_id: i64,
    step: &str,
) -> Option<Vec<Value>> {
    let url = format!("{engine}/api/runs/{run_id}/steps/{step}/logs");
    let response = poll(client, &url, Duration::from_secs(10)).await?;
    let text = response.text().await.ok()?;
    text.lines()
        .map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Starts an in-process engine on `127.0.0.1:0` with `config` and its store in `data_dir`.
pub(crate) async fn start_in_process(data_dir: &Path, config: EngineConfig) -> RunningEngine {
    let store = Store::open_data_dir(data_dir)
        .await
        .expect("open the store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    engine_server::start(store, listener, config, None)
        .await
        .expect("start the engine")
}

/// [`start_in_process`] with an evaluator of one worker (the built `plue`), so that
/// repositories' workflow files are evaluated (dispatch, webhooks) as `plue serve` does.
pub(crate) async fn start_in_process_with_evaluator(
    data_dir: &Path,
    config: EngineConfig,
) -> RunningEngine {
    let pool = evaluator::EvaluatorPool::start(evaluator::PoolConfig {
        workers: 1,
        command: evaluator::WorkerCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_plue")),
            args: vec!["__eval-worker".into()],
        },
        limits: evaluator::Limits::default(),
    })
    .await
    .expect("an evaluator");
    let store = Store::open_data_dir(data_dir)
        .await
        .expect("open the store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    engine_server::start(store, listener, config, Some(std::sync::Arc::new(pool)))
        .await
        .expect("start the engine")
}

/// [`start_in_process`] with the runner protocol on a listener of its own
/// (`plue serve --runner-listen`): its URL is the engine's `runner_url`.
pub(crate) async fn start_in_process_with_runner_listener(
    data_dir: &Path,
    config: EngineConfig,
) -> RunningEngine {
    let store = Store::open_data_dir(data_dir)
        .await
        .expect("open the store");
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let (public, runners) = (bind().await.expect("bind"), bind().await.expect("bind"));
    engine_server::start_with_runner_listener(store, public, Some(runners), config, None)
        .await
        .expect("start the engine")
}

/// The configuration of an in-process engine under test whose runners register with
/// `registration` and whose admin token is `admin`, otherwise the defaults.
pub(crate) fn admin_config(registration: &str, admin: &str) -> EngineConfig {
    let mut config = EngineConfig::new(registration.into());
    config.admin_token = Some(admin.into());
    config
}

/// The configuration of an in-process engine under test: runners register with
/// `registration`, `admin` is the admin token, `vault_key` the vault's key.
pub(crate) fn engine_config(registration: &str, admin: &str, vault_key: &str) -> EngineConfig {
    let mut config = admin_config(registration, admin);
    config.vault = plue_vault::Vault::new(vault_key).expect("a vault");
    config
}

/// An in-process engine holding repository `acme/app` (`repo_id`), its data and mirrors in
/// `sandbox`, and the fixture's runner `runner` (a `plue runner`'s pid, a registered
/// runner's session token, …): the set-up of the tests played against one repository.
pub(crate) struct RepoEngine<R = ()> {
    pub(crate) engine: RunningEngine,
    pub(crate) http: reqwest::Client,
    pub(crate) repo_id: i64,
    pub(crate) runner: R,
    pub(crate) sandbox: Sandbox,
}

impl RepoEngine {
    /// Starts `config` (its mirrors in the new sandbox `name`) with an evaluator of
    /// repositories' workflow files when `evaluating`, and creates `acme/app`.
    pub(crate) async fn launch(
        name: &str,
        mut config: EngineConfig,
        evaluating: bool,
    ) -> RepoEngine {
        let sandbox = Sandbox::new(name);
        config.mirrors_dir = sandbox.path("mirrors");
        let data = sandbox.path("data");
        let engine = if evaluating {
            start_in_process_with_evaluator(&data, config).await
        } else {
            start_in_process(&data, config).await
        };
        let repo_id = create_repo(engine.executor.store()).await;
        RepoEngine {
            engine,
            http: reqwest::Client::new(),
            repo_id,
            runner: (),
            sandbox,
        }
    }

    /// This fixture with its runner `runner`.
    pub(crate) fn with_runner<R>(self, runner: R) -> RepoEngine<R> {
        RepoEngine {
            engine: self.engine,
            http: self.http,
            repo_id: self.repo_id,
            runner,
            sandbox: self.sandbox,
        }
    }
}

impl RepoEngine<u32> {
    /// [`RepoEngine::launch`] without an evaluator, its vault key `vault_key` and 200 ms
    /// heartbeats, with one local `plue runner` named `runner` (its pid).
    pub(crate) async fn with_local_runner(
        name: &str,
        vault_key: &str,
        runner: &str,
    ) -> RepoEngine<u32> {
        let mut config = engine_config(RUNNER_TOKEN, ADMIN_TOKEN, vault_key);
        config.heartbeat_interval = Duration::from_millis(200);
        let h = RepoEngine::launch(name, config, false).await;
        let pid = h.sandbox.runner(runner, &h.engine.url, &[]);
        h.with_runner(pid)
    }
}

impl<R> RepoEngine<R> {
    pub(crate) fn store(&self) -> &Store {
        self.engine.executor.store()
    }

    /// `method path` with bearer `token` (empty: none) and a JSON body; status and body
    /// (its JSON, else its text as a JSON string).
    pub(crate) async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let url = format!("{}{path}", self.engine.url);
        let token = Some(token).filter(|t| !t.is_empty());
        call_json(&self.http, method, &url, token, body.as_ref()).await
    }

    /// [`RepoEngine::call`], asserting that it answers `status`; the body.
    pub(crate) async fn call_ok(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let (got, body) = self.call(token, method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        body
    }

    /// Opens a debug session of `step` of `run` as `token`, idle for at most `idle`
    /// seconds: status and body.
    pub(crate) async fn open_debug(
        &self,
        token: &str,
        run: i64,
        step: &str,
        idle: u64,
    ) -> (u16, Value) {
        let path = format!("/api/runs/{run}/steps/{step}/debug");
        let body = serde_json::json!({ "idle_timeout_secs": idle });
        self.call(token, "POST", &path, Some(body)).await
    }

    /// [`RepoEngine::open_debug`], asserting that the session opens (201; the failure shows
    /// the answer): the session's id.
    pub(crate) async fn open_debug_ok(
        &self,
        token: &str,
        run: i64,
        step: &str,
        idle: u64,
    ) -> String {
        let (status, session) = self.open_debug(token, run, step, idle).await;
        assert_eq!(status, 201, "{session}");
        session["id"].as_str().expect("a session id").to_owned()
    }

    /// The attach stream of debug session `session` as `token`.
    pub(crate) async fn attach(&self, token: &str, session: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/api/debug/{session}/attach", self.engine.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET attach")
    }

    /// [`debug_transcript`] of `response`, the attach stream of `session`, typing as `token`.
    pub(crate) async fn transcript(
        &self,
        token: &str,
        session: &str,
        response: reqwest::Response,
        script: Option<&str>,
        limit: Duration,
    ) -> Transcript {
        let (http, url) = (&self.http, &self.engine.url);
        debug_transcript(http, url, Some(token), session, response, script, limit).await
    }

    /// Waits (at most `limit`) until run `run` has failed or succeeded.
    pub(crate) async fn wait_run(&self, run: i64, limit: Duration) {
        wait_for(limit, &format!("run {run} to end"), || async {
            let run = self.store().run(run).await.unwrap()?;
            matches!(run.status, RunState::Failed | RunState::Succeeded).then_some(())
        })
        .await;
    }
}

/// What a debug session's attach stream said: the terminal's text, the `end` event's data
/// (JSON holding the `reason`) and whether the shell became ready.
pub(crate) struct Transcript {
    pub(crate) text: String,
    pub(crate) end: Option<String>,
    pub(crate) ready: bool,
}

impl Transcript {
    /// The reason the `end` event gave.
    pub(crate) fn reason(&self) -> Option<String> {
        let data: Value = serde_json::from_str(self.end.as_deref()?).expect("an end as JSON");
        data["reason"].as_str().map(String::from)
    }
}

/// Reads the attach stream `response` (which must be a 200) of debug session `session` on
/// the engine at `engine` until its end (or `limit`), typing `script` once the shell is
/// ready, as `token` (none: what `http` sends).
pub(crate) async fn debug_transcript(
    http: &reqwest::Client,
    engine: &str,
    token: Option<&str>,
    session: &str,
    response: reqwest::Response,
    script: Option<&str>,
    limit: Duration,
) -> Transcript {
    use base64::Engine as _;
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    assert_eq!(response.status(), 200);
    let base64 = base64::engine::general_purpose::STANDARD;
    let mut events = response.bytes_stream().eventsource();
    let mut said = Transcript {
        text: String::new(),
        end: None,
        ready: false,
    };
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
        let event = event.expect("an event");
        match event.event.as_str() {
            "output" => {
                let bytes = base64.decode(event.data.trim()).expect("base64 output");
                said.text.push_str(&String::from_utf8_lossy(&bytes));
            }
            "status" if event.data.contains("\"ready\"") && !said.ready => {
                said.ready = true;
                if let Some(script) = script {
                    let url = format!("{engine}/api/debug/{session}/input");
                    let body = serde_json::json!({ "data": base64.encode(script) });
                    let (status, body) =
                        call_json(http, reqwest::Method::POST, &url, token, Some(&body)).await;
                    assert_eq!(status, 204, "{body}");
                }
            }
            "end" => {
                said.end = Some(event.data);
                break;
            }
            _ => {}
        }
    }
    said
}

/// The source of workflow `name`, manually triggered, of `steps` (each a `Step.*(...)`
/// expression, one a line from line 3).
pub(crate) fn workflow_source<S: AsRef<str>>(name: &str, steps: &[S]) -> String {
    let mut source = String::from("def workflow():\n");
    source.push_str(&format!(
        "    return Plan(name='{name}', triggers=[Trigger.manual()], steps=[\n"
    ));
    for step in steps {
        source.push_str(&format!("        {},\n", step.as_ref()));
    }
    source.push_str("    ])\n");
    source
}

/// A plan `name` of `steps`, without triggers, environment or concurrency.
pub(crate) fn plan(name: &str, steps: Vec<Step>) -> Plan {
    Plan::new(name, steps)
}

/// A step `id` running `command` in bash.
pub(crate) fn bash_step(id: &str, command: &str) -> Step {
    Step::bash(id, command)
}

/// Starts a manual run of `plan` on `main`, read from `workflow_path`, on `executor`: of
/// repository `repo` (workflow source `acme/app`) when given, else a local one. Its id.
pub(crate) async fn start_plan_run(
    executor: &Executor,
    workflow_path: &str,
    plan: &Plan,
    repo: Option<RunRepo>,
) -> i64 {
    let json = serde_json::to_string(plan).expect("a plan as JSON");
    executor
        .start_run(&NewRun {
            workflow_source: if repo.is_some() { "acme/app" } else { "local" },
            workflow_path,
            repo,
            ..plue_store::testing::local_run(plan, &json)
        })
        .await
        .expect("start a run")
}

/// Starts a manual run of `plan` on `main` of repository `name` (`repo_id`), its workflow
/// file `ci.plue.py`. Its id.
pub(crate) async fn start_repo_run(
    executor: &Executor,
    name: &str,
    repo_id: i64,
    plan: &Plan,
) -> i64 {
    let json = serde_json::to_string(plan).expect("a plan as JSON");
    executor
        .start_run(&NewRun {
            workflow_source: name,
            workflow_path: "ci.plue.py",
            repo: Some(RunRepo {
                repo_id,
                secrets_allowed: true,
            }),
            ..plue_store::testing::local_run(plan, &json)
        })
        .await
        .expect("start a run")
}

/// Starts a `pull_request` run of `plan` on repository `acme/app` (`repo_id`) with a full
/// `ctx` (so a concurrency group resolves): from a fork when `from_fork` (no secrets, the
/// forks' own concurrency scope). Its id.
pub(crate) async fn start_pr_run(
    executor: &Executor,
    repo_id: i64,
    plan: &Plan,
    from_fork: bool,
) -> i64 {
    let event = evaluator::Event::PullRequest;
    start_acme_run(executor, repo_id, plan, event, "main", !from_fork).await
}

/// Starts a `push` run of `plan` on branch `branch` of repository `acme/app` (`repo_id`),
/// with the context the registry gives a push to that branch (its copy of the workflow
/// file is `plan`, whatever the default branch holds). Its id.
pub(crate) async fn start_push_run(
    executor: &Executor,
    repo_id: i64,
    plan: &Plan,
    branch: &str,
) -> i64 {
    start_acme_run(
        executor,
        repo_id,
        plan,
        evaluator::Event::Push,
        branch,
        true,
    )
    .await
}

/// Starts an `event` run of `plan` (workflow file `.plue/deploy.plue.py`) on branch
/// `branch` of repository `acme/app` (`repo_id`), with the context the registry gives that
/// event on that branch, its secrets when `secrets_allowed`. Its id.
async fn start_acme_run(
    executor: &Executor,
    repo_id: i64,
    plan: &Plan,
    event: evaluator::Event,
    branch: &str,
    secrets_allowed: bool,
) -> i64 {
    let json = serde_json::to_string(plan).expect("a plan as JSON");
    let mut ctx = evaluator::EvalContext::local(event, branch);
    ctx.repo = "acme/app".into();
    let git_ref = ctx.git_ref.clone();
    let ctx = serde_json::to_string(&ctx).expect("a ctx as JSON");
    executor
        .start_run(&NewRun {
            workflow_source: "acme/app",
            workflow_path: ".plue/deploy.plue.py",
            event: event.as_str(),
            git_ref: &git_ref,
            context_json: &ctx,
            repo: Some(RunRepo {
                repo_id,
                secrets_allowed,
            }),
            ..plue_store::testing::local_run(plan, &json)
        })
        .await
        .expect("start a run")
}

/// An executor over `store` with a fresh event bus and no engine-wide secrets, running at
/// most `max_parallel` steps at once: what the store-level tests drive runs through.
pub(crate) fn executor(store: &Store, max_parallel: usize) -> Executor {
    Executor::new(
        store.clone(),
        std::sync::Arc::new(plue_store::events::Events::default()),
        Default::default(),
        max_parallel,
    )
}

/// A fresh PostgreSQL server and the URL of a new database on it, or `None` after saying
/// that the test, which needs one (`why`), skips ([`testkit::postgres_for_tests`]: with
/// `PLUE_REQUIRE_POSTGRES=1` a missing PostgreSQL fails instead).
pub(crate) fn postgres_database(why: &str) -> Option<(testkit::TempPostgres, String)> {
    let Some(postgres) = testkit::postgres_for_tests().expect("PostgreSQL") else {
        eprintln!("skipping: {why}");
        return None;
    };
    let url = postgres.new_database().expect("a database");
    Some((postgres, url))
}

/// Registers the ephemeral runner `name` without labels directly in `store` (its token
/// hash `hash-<name>-<now>`); its id.
pub(crate) async fn store_runner(store: &Store, name: &str) -> i64 {
    store
        .register_ephemeral_runner(name, "{}", &format!("hash-{name}-{}", now_ms()), now_ms())
        .await
        .expect("register a runner")
}

/// Creates the repository `acme/app` in `store`; its id.
pub(crate) async fn create_repo(store: &Store) -> i64 {
    let repo = NewRepo {
        clone_url: "https://forge.example/acme/app.git",
        ..plue_store::testing::repo("acme/app")
    };
    store
        .create_repo(&repo)
        .await
        .expect("create a repository")
        .expect("a new repository")
        .id
}

/// A user `name` (made when it does not exist) holding `roles` (repository id, role name),
/// and a fresh API token of it: `(user id, token id, token)`.
pub(crate) async fn user_with_token(
    store: &Store,
    name: &str,
    roles: &[(i64, &str)],
) -> (i64, i64, String) {
    let user_id = match store.user_by_name(name).await.expect("read a user") {
        Some(user) => user.id,
        None => store
            .create_user(&NewUser::person(name))
            .await
            .expect("create a user"),
    };
    for (repo_id, role) in roles {
        store
            .grant_role(*repo_id, user_id, role)
            .await
            .expect("grant a role");
    }
    let (token_id, token) = new_user_token(store, user_id, "tests", None, None).await;
    (user_id, token_id, token)
}

/// A fresh API token `name` of user `user_id`, narrowed to `max_role` and the repositories
/// `repos` (a JSON array of names) when given: `(token id, token)`.
pub(crate) async fn new_user_token(
    store: &Store,
    user_id: i64,
    name: &str,
    max_role: Option<&str>,
    repos: Option<&str>,
) -> (i64, String) {
    let token = plue_vault::tokens::new_token().expect("a token");
    let token_id = store
        .create_user_token(&plue_store::NewToken {
            user_id,
            name,
            token_hash: &plue_vault::tokens::hash_token(&token),
            max_role,
            repos,
            expires_at: None,
        })
        .await
        .expect("store a token");
    (token_id, token)
}

/// [`new_user_token`] named `narrowed`: the token.
pub(crate) async fn narrowed_token(
    store: &Store,
    user_id: i64,
    max_role: Option<&str>,
    repos: Option<&str>,
) -> String {
    new_user_token(store, user_id, "narrowed", max_role, repos)
        .await
        .1
}

/// Registers repository `name` (a `gitea` one whose clone URL leads nowhere) in `store`;
/// its id. New repositories are private.
pub(crate) use plue_store::testing::create_repo as create_named_repo;

/// One store per available backend, each on a fresh database (see `plue_store::testing`).
pub(crate) use plue_store::testing::stores;

/// Registers an ephemeral runner `name` at the engine at `engine` with registration token
/// `token`, with no labels but the network policies it says it enforces (as a local runner
/// that may make namespaces does: every step's policy), so it may claim any step; its
/// session token.
pub(crate) async fn register_runner(
    http: &reqwest::Client,
    engine: &str,
    token: &str,
    name: &str,
) -> String {
    let labels = serde_json::json!({"plue.network/none": "yes", "plue.network/allow": "yes"});
    let body = serde_json::json!({"name": name, "labels": labels, "ephemeral": true});
    let response: wire::RegisterResponse =
        post_json(http, &format!("{engine}{}", wire::REGISTER), token, &body).await;
    response.session_token
}

/// Registers a long-lived runner `name` announcing `labels` at `engine` with registration
/// token `token`, saying `accept_forks` when given; the engine's answer as it is.
pub(crate) async fn register_labelled_runner(
    http: &reqwest::Client,
    engine: &str,
    token: &str,
    name: &str,
    labels: Value,
    accept_forks: Option<bool>,
) -> reqwest::Response {
    let mut body = serde_json::json!({"name": name, "labels": labels, "ephemeral": false});
    if let Some(accept) = accept_forks {
        body["accept_forks"] = accept.into();
    }
    http.post(format!("{engine}{}", wire::REGISTER))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("registering {name}: {e}"))
}

/// `POST url` of `body` as JSON with bearer `token`; the answer read as JSON.
pub(crate) async fn post_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> T {
    http.post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// Runs the shell `script` in `dir` (`bash -e`) with a fixed git identity, for tests that
/// build a repository to clone; its trimmed stdout. Panics with its stderr when it fails.
pub(crate) fn git_sh(dir: &Path, script: &str) -> String {
    git_sh_with(dir, script, &[])
}

/// [`git_sh`] with `env` (name, value) added to the script's environment.
pub(crate) fn git_sh_with(dir: &Path, script: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Makes `dir` (created if missing) a git repository holding `files` (path, text) in one
/// commit `init` on `main`; that commit's sha.
pub(crate) fn git_repo(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).expect("mkdir");
    write_files(dir, files);
    let init = "git init -q -b main . && git add -A && git commit -qm init && git rev-parse HEAD";
    git_sh(dir, init)
}

/// Registers the git repository at `origin` as `acme/app` on `engine` (a `gitea` one,
/// default branch `main`, webhook secret `secret`); panics unless it answers 201.
pub(crate) async fn register_origin(engine: &str, origin: &Path, secret: &str) {
    register_origin_as(engine, origin, "acme/app", secret).await;
}

/// [`register_origin`] under the name `name`.
pub(crate) async fn register_origin_as(engine: &str, origin: &Path, name: &str, secret: &str) {
    let registered = client()
        .post(format!("{engine}/api/repos"))
        .json(&serde_json::json!({
            "name": name,
            "clone_url": origin.to_str().unwrap(),
            "forge": "gitea",
            "webhook_secret": secret,
            "default_branch": "main",
        }))
        .send()
        .await
        .expect("POST /api/repos");
    let status = registered.status();
    assert_eq!(status, 201, "{}", registered.text().await.unwrap());
}

/// Dispatches `workflow` of `acme/app` on `engine` with `inputs`; the run's id. Retried
/// on a 5xx: registration reads the schedules in the background, and a dispatch at the
/// same moment may race it creating the repository's mirror (`git init` twice; a registry
/// bug outside the dashboard, reported).
pub(crate) async fn dispatch_retrying(
    http: &reqwest::Client,
    engine: &str,
    workflow: &str,
    inputs: Value,
) -> i64 {
    dispatch_retrying_to(http, engine, "acme/app", workflow, inputs).await
}

/// [`dispatch_retrying`] on the repository `repo`.
pub(crate) async fn dispatch_retrying_to(
    http: &reqwest::Client,
    engine: &str,
    repo: &str,
    workflow: &str,
    inputs: Value,
) -> i64 {
    let body = serde_json::json!({"workflow": workflow, "inputs": inputs});
    wait_for(Duration::from_secs(20), "a first dispatch", || async {
        let answer = http
            .post(format!("{engine}/api/repos/{repo}/dispatch"))
            .json(&body)
            .send()
            .await
            .expect("dispatch");
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        assert!(!status.is_client_error(), "{status}: {body}");
        body["run_id"].as_i64()
    })
    .await
}

/// The ids of the runs a webhook delivery's answer says it started.
pub(crate) fn run_ids(answer: &Value) -> Vec<i64> {
    answer["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("no runs in {answer}"))
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// Sets the secret `name` of repository `repo` on `engine` to `value` as the admin (204).
pub(crate) async fn put_repo_secret(engine: &str, repo: &str, name: &str, value: &str) {
    let put = client()
        .put(format!("{engine}/api/repos/{repo}/secrets/{name}"))
        .json(&serde_json::json!({ "value": value }))
        .send()
        .await
        .expect("PUT a secret");
    assert_eq!(put.status(), 204);
}

/// A real webhook fixture (`tests/fixtures/webhooks/<path>`) as JSON, for a test to point
/// at its own repository and re-sign.
pub(crate) fn webhook_fixture(path: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks");
    let text = std::fs::read_to_string(root.join(path)).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

/// A repository on a forge, as `POST /api/repos` registers it.
#[derive(serde::Serialize)]
pub(crate) struct ForgeRepo<'a> {
    pub(crate) name: &'a str,
    /// `github` or `gitea`.
    pub(crate) forge: &'a str,
    pub(crate) clone_url: &'a str,
    pub(crate) api_url: &'a str,
    pub(crate) webhook_secret: &'a str,
    pub(crate) api_token: &'a str,
}

impl ForgeRepo<'_> {
    /// Registers it on `engine` (201, or a panic with the answer); the answer's text.
    pub(crate) async fn register(&self, engine: &str) -> String {
        let response = client()
            .post(format!("{engine}/api/repos"))
            .json(self)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }
}

/// A `method url` request with `token` as its bearer (none: anonymous) and a JSON `body`.
pub(crate) fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request
}

/// Sends [`request`]: the status and the answer (its JSON, else its text as a JSON string).
pub(crate) async fn call_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let response = request(http, method, url, token, body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `method {engine}{path}` of the JSON `body` as the admin ([`client`]): the status and the
/// answer (its JSON, else its text as a JSON string).
pub(crate) async fn admin_call(
    engine: &str,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let url = format!("{engine}{path}");
    call_json(&client(), method, &url, None, Some(body)).await
}

/// Creates the person `name` on `engine` as the admin (`POST /api/users`: 201).
pub(crate) async fn create_person(engine: &str, name: &str) {
    let body = serde_json::json!({"name": name, "kind": "person"});
    let (status, made) = admin_call(engine, reqwest::Method::POST, "/api/users", &body).await;
    assert_eq!(status, 201, "POST /api/users {name}: {made}");
}

/// Makes user `name` a `role` of repository `repo` on `engine`, as the admin (a 2xx).
pub(crate) async fn put_member(engine: &str, repo: &str, name: &str, role: &str) {
    let path = format!("/api/repos/{repo}/members/{name}");
    let body = serde_json::json!({ "role": role });
    let (status, answer) = admin_call(engine, reqwest::Method::PUT, &path, &body).await;
    assert!(
        (200..300).contains(&status),
        "PUT {path}: {status} {answer}"
    );
}

/// A fresh API token (named `t`) of user `name` on `engine`, made by the admin (201).
pub(crate) async fn api_token_of(engine: &str, name: &str) -> String {
    let path = format!("/api/users/{name}/tokens");
    let body = serde_json::json!({"name": "t"});
    let (status, made) = admin_call(engine, reqwest::Method::POST, &path, &body).await;
    assert_eq!(status, 201, "POST {path}: {made}");
    made["token"].as_str().expect("a token").to_string()
}

/// Links user `name` on `engine` to the login `login` on `forge`, as the admin (201).
pub(crate) async fn link_forge_login(engine: &str, name: &str, forge: &str, login: &str) {
    let path = format!("/api/users/{name}/forge-logins");
    let body = serde_json::json!({"forge": forge, "login": login});
    let (status, linked) = admin_call(engine, reqwest::Method::POST, &path, &body).await;
    assert_eq!(status, 201, "POST {path}: {linked}");
}

/// Delivers `body` to `{engine}/webhooks/{forge}` as `event` with delivery id `id`, signed
/// with `secret` and carrying the headers that forge sends; the status and the JSON answer.
pub(crate) async fn deliver_webhook(
    engine: &str,
    forge: &str,
    event: &str,
    id: &str,
    body: &Value,
    secret: &str,
) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let signature = plue_forge::signature::sign(&body, secret);
    let request = reqwest::Client::new()
        .post(format!("{engine}/webhooks/{forge}"))
        .header("content-type", "application/json")
        .body(body);
    let request = match forge {
        "github" => request
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", id)
            .header("X-Hub-Signature-256", format!("sha256={signature}"))
            .header("User-Agent", "GitHub-Hookshot/test"),
        _ => request
            .header("X-Gitea-Event", event)
            .header("X-Gitea-Delivery", id)
            .header("X-Gitea-Signature", signature.clone())
            .header("X-Hub-Signature-256", format!("sha256={signature}"))
            .header("X-GitHub-Event", event),
    };
    let response = request.send().await.expect("delivery");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The scripted Claude's replies for agents each routed by `case {id} now` in their
/// prompt: per agent, one turn per list of tool calls (`(tool, input)`, ids `t{turn}-{i}`),
/// then a final `done`.
pub(crate) fn routed_agents<'a>(
    agents: impl IntoIterator<Item = (&'a str, &'a [Vec<(&'static str, Value)>])>,
) -> Vec<testkit::claude::Routed> {
    use testkit::claude::{Routed, Turn};
    let mut routed = Vec::new();
    for (id, turns) in agents {
        let when = Some(format!("case {id} now"));
        for (n, calls) in turns.iter().enumerate() {
            let mut turn = Turn::new();
            for (i, (name, input)) in calls.iter().enumerate() {
                turn = turn.tool_use(&format!("t{n}-{i}"), name, input);
            }
            routed.push(Routed {
                when: when.clone(),
                reply: turn.stop_reason("tool_use").reply(),
            });
        }
        routed.push(Routed {
            when: when.clone(),
            reply: Turn::text(&["done"]).reply(),
        });
    }
    routed
}
