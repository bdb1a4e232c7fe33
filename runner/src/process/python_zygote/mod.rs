//! Warm Python for `python` steps: a zygote interpreter owned by the runner, from which each
//! step's process is forked instead of starting `python3 -u -c SCRIPT` afresh.
//!
//! [`run`] is the one entry point; it answers `None` when the step must take the fresh
//! path instead, and the caller then spawns the interpreter as before. Promises, on top of
//! those of [`super::run`] (same line streaming, timeout, cancel, kill and sweep):
//! - The child behaves as `python3 -u -c SCRIPT` run in the workspace would: `__name__ ==
//!   "__main__"` in a fresh `__main__`, `sys.argv == ["-c"]`, `sys.path[0] == ""`, exactly
//!   the step's environment and directory, stdin on `/dev/null`, stdout and stderr as the
//!   step's two pipes (unbuffered), exit codes and tracebacks as Python's own. The modules
//!   the zygote imported for itself are dropped from `sys.modules` before the script runs,
//!   and the zygote never runs user code, so nothing of one step is seen by the next.
//! - The standard-library modules among those (`json`, `re`, `enum`, `collections`,
//!   `functools`, `socket`, `signal`, ... — never one whose import draws per-process state,
//!   such as `random`, `logging`, `threading`) are served to the step's own `import`
//!   ready-made, as the zygote imported them before any step ran: only where a fresh
//!   import would load the very same files (a workspace module of the same name, or of a
//!   module they import, shadows them as before) and none of the modules that import
//!   brings in is loaded in the step yet; they enter `sys.modules` in the order a fresh
//!   import completes them. Each step has its own copy-on-write copy: what one step
//!   changes in them no later step sees.
//! - Only where that is exact and safe: a zygote started with the same start-up
//!   environment as the step ([`startup_env`]: `LANG`, `LC_*` and flag-only `PYTHON*`
//!   variables; a step with other ones replaces the zygote). A step that sets a variable
//!   which would make an interpreter load something at start-up (`PYTHONPATH`, `LD_*`, ...)
//!   takes the fresh path: the zygote never starts with anything a step chose that names a
//!   path. So does a step whose `HOME` has a `.local` (a user site Python would add at
//!   start-up), and one whose plan says `fresh_interpreter=True`.
//! - The zygote starts in `/` with a `HOME` that does not exist, stdout and stderr on pipes
//!   (so the stdio objects a step inherits are non-seekable, like its own pipes), ignores
//!   `SIGINT`/`SIGTERM` (its children restore the defaults), and is spawned from a thread
//!   of its own that lives as long as it does (`PR_SET_PDEATHSIG` follows the thread).
//!   Every wait for it is bounded: a zygote that stops answering is killed and replaced.
//! - Under a root runner the child does what `launch` does for a fresh step,
//!   in the same order: joins the cgroup as root, then its own mount and IPC namespaces
//!   (where the host allows them) with a private `/proc` and the step's own `/tmp`,
//!   `/var/tmp`, `/dev/shm`, ... (the [`Rooms`] the runner computed, sent in the job), no
//!   supplementary groups, the attempt's gid and uid, then the working directory; a
//!   failure there fails the fork, and the step then takes the fresh path. The
//!   namespaces and `/proc`, which no job decides, a spare makes while it waits (a zygote
//!   of [`Steps::Confined`] steps; a zygote serves steps of its kind only), after joining
//!   the cgroup it waits in where it has one (else it joins the job's at the request,
//!   already in them): its mounts stay slaves of the runner's until the request (nothing
//!   of the spare's leaves) and become private then; where the runner's mount table
//!   changed meanwhile (a private mount propagates nothing) or making them had failed, the
//!   spare goes back into the runner's namespaces and makes them anew. So the step sees
//!   the mounts a fresh step would at its start. A host that
//!   refused the namespaces is reported with the start (`P <pid> shared <bits>`) and said
//!   once, as for a fresh step. Every child, root runner or not, sets `no_new_privs`
//!   before user code.
//! - The zygote never holds a step's script, environment or secrets: the runner writes
//!   the job into a pipe whose read end only the forked child reads, so a later step forked
//!   from the same zygote cannot find an earlier step's secrets in its own memory.
//! - Each step's child is forked ahead of its request (a spare; the next one as soon as
//!   the zygote handed a request to the waiting one, while that one sets itself up and
//!   the runner waits for its answer), so the fork and the copy-on-write faults after it
//!   are neither on the step's path nor beside its start. A spare arms itself first
//!   (parent-death signal, its own session, the zygote's channel closed) and says so; it
//!   holds nothing of any step until its request's descriptors arrive on a socket only it
//!   and the zygote hold; it leaves when the zygote does; one that died, or never armed
//!   itself, is killed and replaced for the request.
//! - No user code runs before the runner accepted the start: the child waits, set up, for
//!   a byte the runner writes into a `go` pipe once it has the zygote's `P`, and leaves
//!   when that pipe is closed unwritten (the runner gave up: the zygote is replaced, the
//!   step runs fresh, and so never twice). The zygote gives a child 5 s to set up.
//! - The child is its own session and process group leader and joins the step's cgroup
//!   before the zygote reports it started; the runner then checks the join like
//!   `containment` does and kills the cgroup and the group at the end, then sweeps.
//! - Steps cannot reach the zygote: its control channel is a socketpair whose runner end
//!   is close-on-exec and whose zygote end every child closes before anything else runs;
//!   the zygote is undumpable (`prctl`), so a step of the same uid cannot ptrace it or
//!   open its `/proc/<pid>/fd` or `mem`. It dies with the runner (parent-death signal, and
//!   EOF on its socket) and is replaced when found dead.
//!
//! Known differences (docs/src/guide/running-locally.md, "`python` steps"): forked
//! children share the zygote's string hash seed when `PYTHONHASHSEED` is unset, and its
//! address layout and stack canary (fresh interpreters each draw their own); `/proc/self/environ` and `cmdline` are the zygote's; the
//! script's frame has the zygote's frames above it (`sys._getframe(1)`); `.pth` files ran
//! once, in the zygote, with its environment; the standard-library directories' entries in
//! `sys.path_importer_cache` are the finder that serves the ready-made modules, whose files
//! an import does not open again (nor raises `import` audit events for).
//!
//! `unsafe` here: only the `pre_exec` hook that starts the zygote (raw syscalls between
//! fork and exec); sockets, pipes and descriptor passing go through nix.
//!
//! Past 600 lines: the runner's whole side of one protocol (the zygote's start, a step's
//! job and the answers to it, its supervision to the end) in one place, beside the
//! `zygote.py` it speaks to; its tests are in `tests.rs` and `redteam.rs`.
//!
//! Why one file past ~600 lines: the zygote's lifecycle (start, fork a step, reap, replace)
//! is one state machine over one pipe protocol.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use nix::unistd::Pid;
use tokio::sync::mpsc::Sender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    drain_readers, ending_of, step_pipe, Ending, OrderedReader, ProcessResult, ProcessSpec,
    DRAIN_GRACE,
};
use crate::containment::{self, StepCgroup};
use crate::launch::pipe;
use crate::reaper;
use crate::rooms::{self, Rooms};
use crate::step_user::StepUsers;
use plue_types::protocol::Stream;

/// The zygote's program, run as `python3 -u -c BOOTSTRAP ZYGOTE`.
const ZYGOTE_PY: &str = include_str!("zygote.py");

/// Compiles and runs the zygote's program (its `sys.argv[1]`) in `__main__`, binding
/// nothing. A step's child ends by returning through this `-c` code, as a fresh
/// `python3 -c` ends, and that return frees the parsed `-c` source: a line here, where the
/// whole program given as `-c` cost each child ~250 copy-on-write faults (half a
/// millisecond) to free the zygote's syntax tree, parsed before the fork.
const BOOTSTRAP: &str = r#"exec(compile(__import__("sys").argv[1], "<string>", "exec"))"#;

/// The zygote's argument when descriptor 4 is the directory of the cgroup its first
/// spare joins while it waits (see [`Zygote::start`]).
const FIRST_CGROUP_ARG: &str = "first-cgroup-fd=4";

/// The zygote's argument when its steps are [`Steps::Confined`]: each spare makes the
/// step's namespaces while it waits.
const CONFINE_AHEAD_ARG: &str = "confine-ahead";

/// The zygote's argument naming the seccomp filter every job names (`seccomp=<hex>`, see
/// [`crate::launch::seccomp::program_hex`]): the zygote makes it once, not each child.
const SECCOMP_ARG: &str = "seccomp=";

/// Whose steps a zygote forks: a root runner's step users, each confined (its own mount
/// and IPC namespaces, made by the spare while it waits, off the step's path), or the
/// runner's own user, unconfined. A zygote serves steps of its kind only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Steps {
    Confined,
    AsRunner,
}

impl Steps {
    fn of(users: StepUsers) -> Steps {
        match users {
            StepUsers::Same => Steps::AsRunner,
            StepUsers::Range { .. } => Steps::Confined,
        }
    }

    fn of_spec(spec: &ProcessSpec) -> Steps {
        match spec.user {
            Some(_) => Steps::Confined,
            None => Steps::AsRunner,
        }
    }
}

/// In a child between fork and exec: `fd` at `target`, kept across `exec` (a descriptor
/// already there has its close-on-exec flag cleared; `dup2` onto itself would leave it).
/// Async-signal-safe; false with `errno` set on failure.
fn place_fd(fd: libc::c_int, target: libc::c_int) -> bool {
    // SAFETY: plain descriptor syscalls on descriptors of this process.
    unsafe {
        if fd == target {
            libc::fcntl(target, libc::F_SETFD, 0) >= 0
        } else {
            fd >= 0 && libc::dup2(fd, target) >= 0
        }
    }
}

/// How long the zygote may take to report a forked step set up.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Larger jobs (a huge script or environment) take the fresh path.
const MAX_JOB_BYTES: usize = 512 * 1024;

/// `PYTHON*` variables the zygote may start with: they only set flags. Every other one
/// can make an interpreter load code or data from a path the step chose (`PYTHONPATH`,
/// `PYTHONHOME`, `PYTHONUSERBASE`, `PYTHONPYCACHEPREFIX`, `PYTHONSTARTUP`,
/// `PYTHONWARNINGS=...::module.Category`, ...) — as root, under a root runner — so a step
/// that sets one takes the fresh path, where it loads them as itself.
const SAFE_PYTHON_VARS: &[&str] = &[
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONHASHSEED",
    "PYTHONUTF8",
];

/// Variables that change how a process starts (the dynamic loader's, or what `.pth`
/// files of common packages read at start-up): the zygote started without them, so a
/// step that sets one takes the fresh path.
fn changes_start_up(name: &str) -> bool {
    name.starts_with("LD_")
        || name == "GLIBC_TUNABLES"
        || name == "SETUPTOOLS_USE_DISTUTILS"
        || name == "COVERAGE_PROCESS_START"
        || (name.starts_with("PYTHON") && !SAFE_PYTHON_VARS.contains(&name))
}

/// The environment a zygote for `env` starts with: the safe `PYTHON*` flags, `LANG` and
/// `LC_*` (which set the interpreter's locale and stdio encoding at start-up) and nothing
/// else; `None` when the step needs a fresh interpreter (a variable that changes start-up,
/// or a locale naming a path, which glibc would read as the zygote's user).
fn startup_env(env: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    let mut startup = BTreeMap::new();
    for (name, value) in env {
        if changes_start_up(name) {
            return None;
        }
        let locale = name == "LANG" || name.starts_with("LC_");
        if locale && value.contains('/') {
            return None;
        }
        if locale || SAFE_PYTHON_VARS.contains(&name.as_str()) {
            startup.insert(name.clone(), value.clone());
        }
    }
    Some(startup)
}

/// The script when `spec` is a `python3 -u -c SCRIPT` step the zygote can run exactly.
fn warm_script(spec: &ProcessSpec) -> Option<&str> {
    let [u, c, script] = spec.args.as_slice() else {
        return None;
    };
    let named_python = spec
        .program
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("python"));
    if u != "-u" || c != "-c" || !named_python {
        return None;
    }
    // A step in a network namespace of its own starts fresh: the zygote and its spares
    // live in the runner's.
    if spec.fresh_interpreter || spec.network.is_some() {
        return None;
    }
    let home_has_user_site = spec
        .env
        .get("HOME")
        .is_some_and(|home| Path::new(home).join(".local").exists());
    (!home_has_user_site).then_some(script.as_str())
}

/// A running zygote and the runner's end of its control channel.
struct Zygote {
    program: PathBuf,
    startup: BTreeMap<String, String>,
    steps: Steps,
    child: std::process::Child,
    control: Arc<UnixDatagram>,
    /// The cgroup the zygote's waiting spare joined while it waits (made for the step it serves
    /// next, handed to the zygote with the last request); dropped with the zygote, which
    /// kills the spare.
    spare_cgroup: Option<StepCgroup>,
    /// The cgroup (and its open directory) the next request hands over for the spare after
    /// the waiting one: made while the step before it ran (or with the zygote), so no
    /// request waits for its `mkdir`.
    reserve: Option<(StepCgroup, std::fs::File)>,
    /// Dropped with the zygote: ends the thread that spawned it (see [`Zygote::start`]).
    _spawner: std::sync::mpsc::Sender<()>,
}

/// A `HOME` no step can create (a user site there would be read at start-up).
const ZYGOTE_HOME: &str = "/nonexistent/plue-python-zygote";

impl Zygote {
    /// Starts a zygote with `startup` as its whole environment. Spawned from a thread of
    /// its own that waits until the zygote is dropped: `PR_SET_PDEATHSIG` fires when the
    /// spawning *thread* ends, so a zygote started from a short-lived thread would die
    /// with it; this way it dies with the runner, or when dropped.
    fn start(
        program: &Path,
        startup: BTreeMap<String, String>,
        steps: Steps,
    ) -> io::Result<Zygote> {
        let (ours, theirs) = seqpacket_pair()?;
        // The cgroup of the first step, which the first spare joins while it waits, as
        // each later spare joins the one handed over with the request before it: a join
        // waits for an RCU grace period (≈ 10 ms), which must not fall on a step's path.
        let first_cgroup = StepCgroup::create(containment::Mode::Auto);
        let first_dir = first_cgroup
            .as_ref()
            .and_then(|c| std::fs::File::open(c.target().dir).ok());
        let mut command = std::process::Command::new(program);
        command.args(["-u", "-c", BOOTSTRAP, ZYGOTE_PY]);
        if first_dir.is_some() {
            command.arg(FIRST_CGROUP_ARG);
        }
        if steps == Steps::Confined {
            command.arg(CONFINE_AHEAD_ARG);
        }
        if let Ok(hex) = crate::launch::seccomp::program_hex() {
            command.arg(format!("{SECCOMP_ARG}{hex}"));
        }
        command
            .current_dir("/")
            .env_clear()
            .envs(&startup)
            .env("HOME", ZYGOTE_HOME)
            .stdin(Stdio::null())
            // Pipes, as a step's own streams are (Python caches whether they seek); the
            // zygote writes nothing on them but a fatal error.
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let theirs_fd = theirs.as_raw_fd();
        let first_fd = first_dir.as_ref().map(|dir| dir.as_raw_fd());
        // SAFETY: raw async-signal-safe syscalls only.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The cgroup's directory out of the control socket's way, if it is at 3.
                let first_fd = match first_fd {
                    Some(3) => Some(libc::fcntl(3, libc::F_DUPFD_CLOEXEC, 5)),
                    other => other,
                };
                if !place_fd(theirs_fd, 3) || first_fd.is_some_and(|fd| !place_fd(fd, 4)) {
                    return Err(io::Error::last_os_error());
                }
                // Every disposition at its default, as `launch` gives a fresh step: what
                // the runner ignores (a background job's SIGINT) must not reach the
                // zygote's children when a fresh interpreter would not see it.
                crate::launch::reset_signal_dispositions();
                Ok(())
            });
        }
        let (spawned_tx, spawned) = std::sync::mpsc::channel();
        let (spawner, until_dropped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("python-zygote".into())
            .spawn(move || {
                let _ = spawned_tx.send(command.spawn());
                // Returns (and ends the thread) once the zygote's `Sender` is dropped.
                let _ = until_dropped.recv();
            })?;
        let child = spawned
            .recv()
            .map_err(|_| io::Error::other("the zygote's spawning thread ended"))?
            .map_err(|e| {
                io::Error::new(e.kind(), format!("starting {}: {e}", program.display()))
            })?;
        drop(theirs);
        Ok(Zygote {
            program: program.to_owned(),
            startup,
            steps,
            child,
            control: Arc::new(ours),
            spare_cgroup: first_dir.and(first_cgroup),
            reserve: reserve_cgroup(),
            _spawner: spawner,
        })
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the zygote (it stopped answering); the next step starts a new one. Its
    /// channel is shut down first, so no wait for an answer outlives it (a spare a step
    /// stopped before it armed itself could otherwise hold the other end open).
    fn kill(&mut self) {
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The runner's zygote; held for a whole step (the runner runs one step at a time).
static ZYGOTE: tokio::sync::Mutex<Option<Zygote>> = tokio::sync::Mutex::const_new(None);

/// Runs `spec` forked from the warm zygote, or answers `None` when it must take the fresh
/// path (not eligible, or the zygote could not start it: nothing of the step ran then).
pub(super) async fn run(
    spec: &ProcessSpec,
    lines: &Sender<(Stream, String)>,
    cancel: &CancellationToken,
) -> Option<io::Result<ProcessResult>> {
    let script = warm_script(spec)?;
    let startup = startup_env(&spec.env)?;
    let steps = Steps::of_spec(spec);
    let mut slot = ZYGOTE.lock().await;
    let reuse = slot.as_mut().is_some_and(|z| {
        z.program == spec.program && z.startup == startup && z.steps == steps && z.alive()
    });
    if !reuse {
        if let Some(old) = slot.as_ref() {
            tracing::debug!(
                program = %spec.program.display(),
                was = %old.program.display(),
                same_startup = old.startup == startup,
                same_steps = old.steps == steps,
                "replacing the python zygote: the step needs another"
            );
        }
        *slot = None;
        match Zygote::start(&spec.program, startup, steps) {
            Ok(z) => *slot = Some(z),
            Err(err) => {
                tracing::warn!(%err, "no warm python zygote; starting a fresh interpreter");
                return None;
            }
        }
    }
    let zygote = slot.as_mut()?;
    let result = run_in(zygote, spec, script, lines, cancel).await;
    if result.is_none() {
        // Whatever went wrong, the next step gets a new zygote.
        *slot = None;
    }
    result
}

/// Starts the zygote ahead of the first `python` step (`plue runner --warm-python`), so
/// that step does not wait for an interpreter and its imports (≈ 50 ms): with the start-up
/// environment of `base` — the runner's base layer of every step's environment, so a step
/// whose plan adds no start-up variable finds it fit, and one that does replaces it, as
/// [`run`] does for any zygote. Started from the runner's own environment, never a
/// step's. Answers whether a zygote is now running (false: `base` asks for a fresh
/// interpreter, or the start failed, said in the log; the first step then starts one).
/// `users` are the runner's step users (see [`Steps`]).
pub(super) async fn prewarm(
    program: &Path,
    base: &BTreeMap<String, String>,
    users: StepUsers,
) -> bool {
    let Some(startup) = startup_env(base) else {
        return false;
    };
    let mut slot = ZYGOTE.lock().await;
    if slot.as_mut().is_some_and(|z| z.alive()) {
        return true;
    }
    match Zygote::start(program, startup, Steps::of(users)) {
        Ok(zygote) => {
            *slot = Some(zygote);
            true
        }
        Err(err) => {
            tracing::warn!(%err, "could not start the warm python zygote ahead");
            false
        }
    }
}

/// A child the zygote started for a step, as the runner found it before letting it run.
struct Started {
    pid: i32,
    /// It is in the cgroup made for the step.
    joined: bool,
    /// Its start time (see [`reaper::start_time`]).
    born: Option<u64>,
}

/// What ends the wait for a forked step.
enum Trigger {
    Exited(io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

async fn run_in(
    zygote: &mut Zygote,
    spec: &ProcessSpec,
    script: &str,
    lines: &Sender<(Stream, String)>,
    cancel: &CancellationToken,
) -> Option<io::Result<ProcessResult>> {
    reaper::become_subreaper();
    let cookie = reaper::new_cookie();
    let mut env = spec.env.clone();
    env.insert(reaper::COOKIE_VAR.into(), cookie.clone());
    // The cgroup the waiting spare joined is this step's; the next spare joins the one
    // made ahead (the reserve), handed over with this request, while it waits (see
    // zygote.py).
    let mut cgroup = zygote
        .spare_cgroup
        .take()
        .or_else(|| StepCgroup::create(containment::Mode::Auto));
    let (next_cgroup, next_dir) = zygote.reserve.take().or_else(reserve_cgroup).unzip();
    let seccomp = match crate::launch::seccomp::program_hex() {
        Ok(hex) => hex,
        Err(err) => return Some(Err(io::Error::other(err))),
    };
    let job = serde_json::json!({
        "seccomp": seccomp,
        "program": zygote.program.to_string_lossy(),
        "script": script,
        "cwd": spec.cwd.to_string_lossy(),
        "env": env,
        "cgroup_procs": cgroup.as_ref().map(|c| c.procs_path().to_string_lossy().into_owned()),
        "user": spec.user.map(|u| serde_json::json!({"uid": u.uid, "gid": u.gid})),
        "rooms": spec.user.map(|_| Rooms::for_step(&spec.cwd).to_json()),
    })
    .to_string();
    if job.len() > MAX_JOB_BYTES {
        return None;
    }
    let (out_r, out_w) = step_pipe().ok()?;
    let (err_r, err_w) = step_pipe().ok()?;
    // The whole job fits in its pipe, written before the request: no write waits for a
    // child (a spare a step of the runner's uid stopped would hold it forever).
    let (job_r, job_w) = job_pipe(job.len()).ok()?;
    // The child runs no user code before this says so: a start the runner gave up on
    // (the zygote stalled, the answer came late) never runs beside the fresh one.
    let (go_r, go_w) = pipe().ok()?;
    let control = zygote.control.clone();
    let cgroup_path = cgroup.as_ref().map(|c| c.path().to_owned());
    let confined = spec.user.is_some();
    let sent = tokio::task::spawn_blocking(move || -> io::Result<Started> {
        let mut job_w = std::fs::File::from(job_w);
        std::io::Write::write_all(&mut job_w, job.as_bytes())?;
        drop(job_w);
        let mut fds = vec![
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
            job_r.as_raw_fd(),
            go_r.as_raw_fd(),
        ];
        fds.extend(next_dir.as_ref().map(AsRawFd::as_raw_fd));
        send_with_fds(&control, b"F", &fds)?;
        drop((out_w, err_w, job_r, go_r, next_dir));
        // Bounded: a zygote that stopped answering (a step of the runner's own uid could
        // have stopped it) is replaced, never waited for.
        control.set_read_timeout(Some(START_TIMEOUT))?;
        let answer = recv(&control);
        control.set_read_timeout(None)?;
        let answer = answer?;
        let (pid, shared) = match answer.strip_prefix("P ") {
            Some(started) => parse_started(started)
                .ok_or_else(|| io::Error::other(format!("bad answer {answer:?}")))?,
            None => return Err(io::Error::other(answer)),
        };
        if confined {
            match shared {
                0 => rooms::note_private(),
                bits => rooms::note_shared(bits),
            }
        }
        // Asked while the child waits for `go`, so it cannot have ended yet: one that ran
        // and exited before we looked would seem to have joined no cgroup (and have no
        // start time), and its end would take the slow whole-host sweep.
        let started = Started {
            pid,
            joined: cgroup_path.is_some_and(|path| containment::in_cgroup(pid, &path)),
            born: reaper::start_time(Pid::from_raw(pid)),
        };
        // Accepted: the child may run the script (dropped unwritten on any error above).
        std::io::Write::write_all(&mut std::fs::File::from(go_w), b"G")?;
        Ok(started)
    })
    .await;
    let started = match sent {
        Ok(Ok(started)) => {
            zygote.spare_cgroup = next_cgroup;
            // The one the next request hands over, made while this step runs.
            zygote.reserve = reserve_cgroup();
            started
        }
        Ok(Err(err)) => {
            tracing::warn!(%err, "the python zygote did not start the step; starting it afresh");
            // Whatever it may have forked dies with the step's cgroup, and with the zygote,
            // which is replaced: one that did not answer in time may be stuck. Nothing
            // here waits for the cgroup to empty, so step users look for survivors.
            crate::cgroup_state::note_uncontained();
            if let Some(cgroup) = &cgroup {
                cgroup.kill();
            }
            zygote.kill();
            return None;
        }
        Err(err) => {
            tracing::warn!(%err, "the python zygote task failed");
            return None;
        }
    };
    Some(
        supervise(
            zygote,
            spec,
            started,
            cookie,
            cgroup.take(),
            (out_r, err_r),
            lines,
            cancel,
        )
        .await,
    )
}

/// From the moment the step's process runs: stream, wait, kill, sweep (as `super::run`).
#[allow(clippy::too_many_arguments)]
async fn supervise(
    zygote: &mut Zygote,
    spec: &ProcessSpec,
    Started { pid, joined, born }: Started,
    cookie: String,
    mut cgroup: Option<StepCgroup>,
    (out_r, err_r): (OwnedFd, OwnedFd),
    lines: &Sender<(Stream, String)>,
    cancel: &CancellationToken,
) -> io::Result<ProcessResult> {
    let started = Instant::now();
    let stop = CancellationToken::new();
    let reader = match OrderedReader::new(out_r, err_r, lines.clone(), stop.clone(), &spec.masker) {
        Ok(reader) => reader,
        Err(e) => {
            // Unreadable pipes: the step dies at once, and so does the zygote (its report of
            // this child would otherwise answer the next step's wait).
            if let Some(cgroup) = &cgroup {
                cgroup.kill();
            }
            reaper::kill_group(Pid::from_raw(pid));
            zygote.kill();
            return Err(e);
        }
    };
    let live = reaper::register_step(pid, &cookie, cgroup.as_ref().map(StepCgroup::path));
    let leader = Pid::from_raw(pid);
    if cgroup.is_some() && !joined {
        tracing::warn!(
            pid,
            "the step did not join its cgroup; relying on the sweep"
        );
        cgroup = None;
    }
    let readers = [tokio::spawn(reader.run())];
    let control = zygote.control.clone();
    let mut status = tokio::task::spawn_blocking(move || -> io::Result<ExitStatus> {
        let answer = recv(&control)?;
        answer
            .strip_prefix("S ")
            .and_then(|s| s.trim().parse().ok())
            .map(ExitStatus::from_raw)
            .ok_or_else(|| io::Error::other(format!("python zygote: bad answer {answer:?}")))
    });
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let mut waited = None;
    let trigger = tokio::select! {
        biased;
        joined = &mut status => {
            let exited = joined.unwrap_or_else(|e| Err(io::Error::other(e)));
            waited = Some(());
            Trigger::Exited(exited)
        }
        () = &mut deadline => Trigger::TimedOut,
        () = cancel.cancelled() => Trigger::Cancelled,
    };
    let duration = started.elapsed();
    let kill = || {
        if let Some(cgroup) = &cgroup {
            cgroup.kill();
        }
        reaper::kill_group(leader);
    };
    kill();
    let killed_at = Instant::now();
    if waited.is_none() {
        // The zygote reaps the killed leader and reports it; a zygote that is gone or
        // stopped reports nothing, and is killed (its socket's EOF ends the wait).
        match tokio::time::timeout(DRAIN_GRACE, &mut status).await {
            Ok(reported) => {
                if let Err(err) = reported.unwrap_or_else(|e| Err(io::Error::other(e))) {
                    tracing::warn!(%err, "the python zygote did not report the killed step");
                    zygote.kill();
                }
            }
            Err(_) => {
                tracing::warn!("the python zygote did not report the killed step in time");
                zygote.kill();
            }
        }
    }
    // As a fresh step's end: nothing of it is left once this returns.
    containment::Finishing {
        cgroup,
        leader,
        born,
        cookie,
        live: Some(live),
    }
    .finish_off_thread()
    .await;
    drain_readers(readers, killed_at, &stop).await;
    let ending = match trigger {
        Trigger::TimedOut => Ending::TimedOut,
        Trigger::Cancelled => Ending::Cancelled,
        Trigger::Exited(status) => ending_of(status.map_err(|e| {
            zygote.kill();
            io::Error::other(format!("python zygote: {e}"))
        })?),
    };
    Ok(ProcessResult { ending, duration })
}

/// A new step cgroup and its directory, opened (for a request to hand over: the spare
/// after the waiting one joins it while it waits), or `None` where there is none.
fn reserve_cgroup() -> Option<(StepCgroup, std::fs::File)> {
    let cgroup = StepCgroup::create(containment::Mode::Auto)?;
    let dir = std::fs::File::open(cgroup.target().dir).ok()?;
    Some((cgroup, dir))
}

/// The pid and what stayed shared in the zygote's `P` answer: `<pid>` or
/// `<pid> shared <bits>`.
fn parse_started(started: &str) -> Option<(i32, i32)> {
    let mut words = started.split_whitespace();
    let pid = words.next()?.parse().ok()?;
    let shared = match (words.next(), words.next()) {
        (None, _) => 0,
        (Some("shared"), Some(bits)) => bits.parse().ok()?,
        _ => return None,
    };
    words.next().is_none().then_some((pid, shared))
}

/// A close-on-exec `SOCK_SEQPACKET` socketpair (message boundaries, and EOF when the
/// peer is gone), driven through `UnixDatagram`'s `send`/`recv`.
fn seqpacket_pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((UnixDatagram::from(ours), UnixDatagram::from(theirs)))
}

/// A close-on-exec pipe: (read end, write end).
/// A pipe that holds `len` bytes (a job up to [`MAX_JOB_BYTES`]), so writing the job never
/// waits for its reader. Fails when the kernel will not grow it that far.
fn job_pipe(len: usize) -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe()?;
    let size = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_GETPIPE_SZ)?;
    if usize::try_from(size).unwrap_or(0) < len {
        let wanted = i32::try_from(len).map_err(io::Error::other)?;
        let size = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(wanted))?;
        if usize::try_from(size).unwrap_or(0) < len {
            return Err(io::Error::other("the job does not fit in a pipe"));
        }
    }
    Ok((read, write))
}

/// Sends one datagram carrying `fds` (SCM_RIGHTS).
fn send_with_fds(socket: &UnixDatagram, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    sendmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &[io::IoSlice::new(data)],
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// One answer of the zygote; an error when it is gone.
fn recv(socket: &UnixDatagram) -> io::Result<String> {
    let mut buf = vec![0u8; 8192];
    let n = socket.recv(&mut buf)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the python zygote is gone",
        ));
    }
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[cfg(test)]
mod redteam;
#[cfg(test)]
mod tests;
