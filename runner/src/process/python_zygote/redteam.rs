//! Red-team tests: a `python` step (untrusted code) attacking the warm zygote, later steps
//! and its own containment, as the runner's user and (under a root runner) as a step user;
//! and parity gaps with a fresh `python3 -u -c`.
//!
//! Long by design: one self-contained attack (or parity probe) per test, each with its
//! reasoning, so a finding can be read and re-run alone.
//!
//! A test that asserts an attack finds nothing and *fails* is kept `#[ignore = "finding:
//! ..."]`: run them with `cargo test -p runner --lib python_zygote::redteam -- --ignored`.
//!
//! Every warm step prints (or the test checks) that it really was forked from the zygote
//! (`os.getppid()` is not the runner), since `run` silently takes the fresh path when the
//! zygote cannot start a step.
//!
//! Why one file past ~600 lines: a list of attacks on one zygote fixture, one test each;
//! read as that list.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::super::{run, run_contained};
use super::*;
use crate::containment::Mode;
use crate::step_user::StepUser;

/// These tests take turns with `tests`' (some replace or stop the zygote).
use super::tests::SERIAL;

const NOBODY: StepUser = StepUser {
    uid: 65534,
    gid: 65534,
};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The users a test runs its step as: the runner's own, and `nobody` when we are root.
fn users() -> Vec<Option<StepUser>> {
    if is_root() {
        vec![None, Some(NOBODY)]
    } else {
        vec![None]
    }
}

/// Python source written indented inside Rust: the common indentation removed.
fn py(source: &str) -> String {
    let source = source.strip_prefix('\n').unwrap_or(source);
    let indent = source
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    source
        .lines()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A workspace (with `home/`) the step's user owns.
struct Ws(tempfile::TempDir);

impl Ws {
    fn new(user: Option<StepUser>) -> Ws {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        let ws = Ws(dir);
        if let Some(user) = user {
            ws.chown_all(user);
        }
        ws
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Gives everything in the workspace to `user` (as an earlier step of it could have
    /// written it).
    fn chown_all(&self, user: StepUser) {
        for entry in walkdir::WalkDir::new(self.path()) {
            let entry = entry.unwrap();
            std::os::unix::fs::lchown(entry.path(), Some(user.uid), Some(user.gid)).unwrap();
        }
    }
}

fn spec(script: &str, ws: &Ws, user: Option<StepUser>) -> ProcessSpec {
    ProcessSpec {
        program: PathBuf::from("/usr/bin/python3"),
        args: vec!["-u".into(), "-c".into(), script.into()],
        cwd: ws.path().to_owned(),
        env: BTreeMap::from([
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            (
                "HOME".to_string(),
                ws.path().join("home").display().to_string(),
            ),
            ("RT_RUNNER".to_string(), std::process::id().to_string()),
        ]),
        user,
        timeout: Duration::from_secs(30),
        masker: Default::default(),
        fresh_interpreter: false,
        network: None,
    }
}

/// What a step showed: how it ended, its stdout lines and its stderr lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    ending: Ending,
    out: Vec<String>,
    err: Vec<String>,
}

async fn go(spec: ProcessSpec, warm: bool) -> io::Result<Seen> {
    let (tx, mut rx) = mpsc::channel(256);
    let collector = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    });
    let cancel = CancellationToken::new();
    let result = if warm {
        // On a runtime whose threads live as long as the test binary: the zygote dies with
        // the *thread* that started it (see `a_zygote_outlives_the_thread_that_started_it`).
        global()
            .spawn(async move { run(spec, tx, cancel).await })
            .await
            .expect("the warm run's task")
    } else {
        run_contained(spec, tx, cancel, Mode::Auto).await
    };
    let lines = collector.await.unwrap();
    let of = |stream| {
        lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.clone())
            .collect()
    };
    Ok(Seen {
        ending: result?.ending,
        out: of(Stream::Stdout),
        err: of(Stream::Stderr),
    })
}

/// A multi-thread runtime for the whole test binary (its worker threads never exit).
fn global() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

async fn warm(spec: ProcessSpec) -> Seen {
    go(spec, true).await.expect("run")
}

async fn fresh(spec: ProcessSpec) -> Seen {
    go(spec, false).await.expect("run")
}

/// Prints `WARM` first when the step was forked from the zygote.
const WARM_MARK: &str = "import os as _o\nprint('WARM' if _o.getppid() != int(_o.environ['RT_RUNNER']) else 'FRESH')\ndel _o\n";

fn marked(script: &str) -> String {
    format!("{WARM_MARK}{script}")
}

fn assert_warm(seen: &Seen) {
    assert_eq!(
        seen.out.first().map(String::as_str),
        Some("WARM"),
        "{seen:?}"
    );
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s.rsplit(')').next().unwrap_or("").trim_start();
        !state.starts_with('Z') && !state.starts_with('X')
    })
}

// ---------------------------------------------------------------------------------------
// (1) A step cannot reach the zygote.
// ---------------------------------------------------------------------------------------

/// As a step user of a root runner: no signal, ptrace, pidfd_getfd, process_vm_readv or
/// /proc access reaches the (root) zygote, and it still serves the next step.
#[tokio::test]
async fn a_step_user_cannot_signal_trace_or_read_the_zygote() {
    let _serial = SERIAL.lock().await;
    if !is_root() {
        return;
    }
    let ws = Ws::new(Some(NOBODY));
    let script = py(r#"
        import os, ctypes, errno, signal
        libc = ctypes.CDLL(None, use_errno=True)
        z = os.getppid()
        res = {}
        for s in (0, signal.SIGSTOP, signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGCONT):
            try:
                os.kill(z, s); res['kill%d' % s] = 'sent'
            except OSError as e:
                res['kill%d' % s] = errno.errorcode[e.errno]
        for name, args in (('attach', (16, z, 0, 0)), ('seize', (0x4206, z, 0, 0))):
            r = libc.ptrace(*args)
            res[name] = 'ok' if r == 0 else errno.errorcode[ctypes.get_errno()]
        try:
            pfd = os.pidfd_open(z)
            r = libc.syscall(438, pfd, 3, 0)  # pidfd_getfd: the zygote's control socket
            res['getfd'] = 'ok' if r >= 0 else errno.errorcode[ctypes.get_errno()]
        except OSError as e:
            res['getfd'] = 'pidfd_open ' + errno.errorcode[e.errno]
        buf = ctypes.create_string_buffer(16)
        class iovec(ctypes.Structure):
            _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
        local = iovec(ctypes.addressof(buf), 16)
        remote = iovec(0x400000, 16)
        r = libc.syscall(310, z, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        res['vm_readv'] = 'ok' if r >= 0 else errno.errorcode[ctypes.get_errno()]
        for p in ('fd', 'mem', 'environ', 'cmdline', 'maps', 'cwd', 'root', 'status'):
            try:
                os.stat('/proc/%d/%s' % (z, p)); res[p] = 'visible'
            except OSError as e:
                res[p] = errno.errorcode[e.errno]
        bad = {k: v for k, v in res.items() if v in ('sent', 'ok', 'visible')}
        print(bad)
    "#);
    let pid_before = ZYGOTE.lock().await.as_ref().map(|z| z.child.id());
    let seen = warm(spec(&marked(&script), &ws, Some(NOBODY))).await;
    assert_warm(&seen);
    assert_eq!(seen.out[1..], ["{}".to_string()], "{seen:?}");
    // The zygote is unharmed and serves the next step.
    let next = warm(spec(&marked("print('next')"), &ws, Some(NOBODY))).await;
    assert_eq!(next.out, ["WARM", "next"]);
    let pid_after = ZYGOTE.lock().await.as_ref().map(|z| z.child.id());
    if pid_before.is_some() {
        assert_eq!(pid_before, pid_after, "the zygote was replaced");
    }
}

/// Every descriptor a step starts with is 0 (`/dev/null`), 1 and 2 (its pipes): checked
/// with `fstat` on every number up to the limit, not through `/proc`.
#[tokio::test]
async fn a_step_inherits_only_stdin_stdout_and_stderr() {
    let _serial = SERIAL.lock().await;
    for user in users() {
        let ws = Ws::new(user);
        let script = py(r#"
            import os, stat, resource
            limit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 20)
            fds = []
            for fd in range(limit):
                try:
                    st = os.fstat(fd)
                except OSError:
                    continue
                kind = 'chr' if stat.S_ISCHR(st.st_mode) else 'fifo' if stat.S_ISFIFO(st.st_mode) else oct(st.st_mode)
                fds.append((fd, kind))
            print(fds, os.major(os.fstat(0).st_rdev), os.minor(os.fstat(0).st_rdev))
        "#);
        let seen = warm(spec(&marked(&script), &ws, user)).await;
        assert_warm(&seen);
        assert_eq!(
            seen.out[1..],
            ["[(0, 'chr'), (1, 'fifo'), (2, 'fifo')] 1 3".to_string()],
            "user {user:?}: {seen:?}"
        );
    }
}

/// No shared writable mapping (which a later step forked from the zygote, or the zygote
/// itself, would also see) is in a step's memory.
#[tokio::test]
async fn a_step_shares_no_writable_memory_with_the_zygote() {
    let _serial = SERIAL.lock().await;
    for user in users() {
        let ws = Ws::new(user);
        let script = py(r#"
            shared = [l.strip() for l in open('/proc/self/maps') if l.split()[1][1] == 'w' and l.split()[1][3] == 's']
            print(shared)
        "#);
        let seen = warm(spec(&marked(&script), &ws, user)).await;
        assert_warm(&seen);
        assert_eq!(seen.out[1..], ["[]".to_string()], "user {user:?}: {seen:?}");
    }
}

/// The zygote has no directory a step could write: its cwd (`sys.path[0]` of the
/// zygote) is `/`, its `HOME` does not exist and cannot be created by a step user.
#[tokio::test]
async fn the_zygote_has_no_directory_a_step_could_write() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let seen = warm(spec(&marked("print('up')"), &ws, None)).await;
    assert_warm(&seen);
    let pid = ZYGOTE.lock().await.as_ref().expect("a zygote").child.id();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        PathBuf::from("/")
    );
    assert!(!Path::new(ZYGOTE_HOME).exists());
    if is_root() {
        let ws = Ws::new(Some(NOBODY));
        let script = format!(
            "import os\ntry:\n    os.makedirs({ZYGOTE_HOME:?})\n    print('made')\nexcept OSError:\n    print('refused')"
        );
        let seen = warm(spec(&marked(&script), &ws, Some(NOBODY))).await;
        assert_eq!(seen.out, ["WARM", "refused"], "{seen:?}");
    }
}

// ---------------------------------------------------------------------------------------
// (3) A step cannot outlive its end, leave its cgroup, or hold the zygote.
// ---------------------------------------------------------------------------------------

/// A step leaves a double-forked, `setsid` daemon (no exec: its `/proc/<pid>/environ` is
/// the zygote's, without the step's cookie) that would spy on the next step. It must be
/// dead when the step's `run` returns.
#[tokio::test]
async fn a_daemon_left_by_a_step_does_not_outlive_it() {
    let _serial = SERIAL.lock().await;
    for user in users() {
        let ws = Ws::new(user);
        let script = py(r#"
            import os, sys, time
            r, w = os.pipe()
            if os.fork() == 0:
                os.setsid()
                if os.fork():
                    os._exit(0)
                os.close(r)
                os.write(w, b'%d' % os.getpid()); os.close(w)
                devnull = os.open('/dev/null', os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.environ.clear()
                while True:
                    with open('spy.log', 'a') as f:
                        f.write('%f %s\n' % (time.time(), sorted(os.listdir('/proc'))[:3]))
                    time.sleep(0.05)
            os.close(w)
            pid = int(os.read(r, 64))
            environ = open('/proc/%d/environ' % pid, 'rb').read()
            print(pid, b'PLUE_STEP_COOKIE=' in environ)
        "#);
        let seen = warm(spec(&marked(&script), &ws, user)).await;
        assert_warm(&seen);
        let pid: i32 = seen.out[1].split(' ').next().unwrap().parse().unwrap();
        let still = alive(pid);
        if still {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        assert!(
            !still,
            "user {user:?}: the daemon {pid} outlived its step: {seen:?}"
        );
        // Nothing of it runs during the next step either.
        let before = std::fs::metadata(ws.path().join("spy.log"))
            .map(|m| m.len())
            .unwrap_or(0);
        let next = warm(spec(&marked("import time; time.sleep(0.3)"), &ws, user)).await;
        assert_warm(&next);
        let after = std::fs::metadata(ws.path().join("spy.log"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert_eq!(
            before, after,
            "user {user:?}: the daemon ran during the next step"
        );
    }
}

/// A step user cannot move itself (or a child) out of its cgroup: not into the runner's
/// (= the zygote's) cgroup, not into the root one.
#[tokio::test]
async fn a_step_user_cannot_leave_its_cgroup() {
    let _serial = SERIAL.lock().await;
    if !is_root() {
        return;
    }
    let ws = Ws::new(Some(NOBODY));
    let script = py(r#"
        import os
        own = [l for l in open('/proc/self/cgroup').read().splitlines() if l.startswith('0::')][0][3:]
        mount = None
        for line in open('/proc/self/mountinfo'):
            fields = line.split()
            if fields[fields.index('-') + 1] == 'cgroup2':
                mount = fields[4]
        moved = []
        if mount:
            path = own
            while path not in ('', '/'):
                path = os.path.dirname(path)
                procs = os.path.join(mount + path, 'cgroup.procs')
                try:
                    with open(procs, 'w') as f:
                        f.write(str(os.getpid()))
                    moved.append(procs)
                except OSError:
                    pass
        now = [l for l in open('/proc/self/cgroup').read().splitlines() if l.startswith('0::')][0][3:]
        print(own.rsplit('/', 1)[-1].startswith('plue-step-'), moved, now == own)
    "#);
    let seen = warm(spec(&marked(&script), &ws, Some(NOBODY))).await;
    assert_warm(&seen);
    let joined = seen.out[1].starts_with("True");
    if !joined {
        eprintln!("skipped: no step cgroup on this host ({seen:?})");
        return;
    }
    assert_eq!(seen.out[1..], ["True [] True".to_string()], "{seen:?}");
}

/// The timeout and kill hold whatever the step does to its own process: a step that
/// ignores every signal it can and blocks in a child that ignores them too is killed.
#[tokio::test]
async fn a_step_ignoring_signals_is_still_killed_at_its_timeout() {
    let _serial = SERIAL.lock().await;
    for user in users() {
        let ws = Ws::new(user);
        let script = py(r#"
            import os, signal, time
            for s in signal.valid_signals():
                try:
                    signal.signal(s, signal.SIG_IGN)
                except (OSError, ValueError):
                    pass
            if os.fork() == 0:
                os.setsid()
                while True:
                    time.sleep(1)
            print(os.getpid())
            time.sleep(300)
        "#);
        let mut s = spec(&marked(&script), &ws, user);
        s.timeout = Duration::from_millis(1500);
        let started = std::time::Instant::now();
        let seen = warm(s).await;
        assert_warm(&seen);
        assert_eq!(seen.ending, Ending::TimedOut, "user {user:?}: {seen:?}");
        assert!(started.elapsed() < Duration::from_secs(8), "user {user:?}");
        let pid: i32 = seen.out[1].parse().unwrap();
        assert!(!alive(pid), "user {user:?}");
    }
}

/// FINDING (runner's own user; under a non-root runner every step is that user): a step
/// that stops the zygote (`SIGSTOP` to `os.getppid()`) makes the runner wait forever
/// after the step's timeout: `supervise` kills the step, then awaits the zygote's `S`
/// report with no bound, and the zygote, stopped, never sends it. The same holds for the
/// *next* step on a stopped zygote: `run_in` waits for `P` with no bound (`alive()`
/// counts a stopped zygote as alive).
#[tokio::test]
async fn stopping_the_zygote_does_not_escape_the_timeout() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let script = py(r#"
        import os, signal, time
        open('zygote.pid', 'w').write(str(os.getppid()))
        os.kill(os.getppid(), signal.SIGSTOP)
        time.sleep(300)
    "#);
    let mut s = spec(&script, &ws, None);
    s.timeout = Duration::from_secs(1);
    let ended = tokio::time::timeout(Duration::from_secs(10), go(s, true)).await;
    // Whatever happened, do not leave a stopped zygote to the other tests.
    if let Ok(pid) = std::fs::read_to_string(ws.path().join("zygote.pid")) {
        let pid = Pid::from_raw(pid.trim().parse().unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    *ZYGOTE.lock().await = None;
    let seen = ended.expect("the runner still waits 9 s after the step's 1 s timeout");
    assert_eq!(seen.map(|s| s.ending).ok(), Some(Ending::TimedOut));
}

// ---------------------------------------------------------------------------------------
// (3) A step's plan cannot poison the (root) zygote through start-up variables.
// ---------------------------------------------------------------------------------------

/// Evil module code: appends the uid it runs as to `<its dir>/pwned`, then steps aside so
/// the real module loads (nothing else looks different).
const EVIL_JSON: &str = r#"
import os, sys
_here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_here, 'pwned'), 'a') as _f:
    _f.write('uid=%d pid=%d\n' % (os.getuid(), os.getpid()))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
del sys.modules['json']
import json
"#;

/// FINDING (critical, root runner): a plan's `env` reaches the zygote's start-up
/// environment (`startup_env`: every `PYTHON*`), and a root runner's zygote runs as root.
/// `PYTHONPATH` naming a directory the step user wrote (its workspace, `/tmp`) makes the
/// root zygote import the step user's `json.py` at start-up: code of the workflow's
/// author runs as root, in the runner's session and cgroup, before `PR_SET_DUMPABLE`.
/// A fresh interpreter would have run it as the step user.
#[tokio::test]
async fn a_steps_pythonpath_does_not_run_code_as_the_zygotes_root() {
    let _serial = SERIAL.lock().await;
    if !is_root() {
        return;
    }
    let ws = Ws::new(None);
    let evil = ws.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    std::fs::write(evil.join("json.py"), EVIL_JSON).unwrap();
    ws.chown_all(NOBODY);
    let mut s = spec(&marked("import os; print(os.getuid())"), &ws, Some(NOBODY));
    s.env
        .insert("PYTHONPATH".into(), evil.display().to_string());
    let seen = warm(s).await;
    let pwned = std::fs::read_to_string(evil.join("pwned")).unwrap_or_default();
    // A new zygote for the other tests (this one has another start-up environment anyway).
    *ZYGOTE.lock().await = None;
    assert_eq!(
        seen.out.last().map(String::as_str),
        Some("65534"),
        "{seen:?}"
    );
    assert!(
        !pwned.contains("uid=0 "),
        "the step user's json.py ran as root: {pwned:?} (step: {seen:?})"
    );
}

/// FINDING (critical, root runner): the same through `PYTHONUSERBASE`: the root zygote's
/// `site` processes the step user's `.pth` files (its user site is enabled: uid == euid).
#[tokio::test]
async fn a_steps_pythonuserbase_does_not_run_code_as_the_zygotes_root() {
    let _serial = SERIAL.lock().await;
    if !is_root() {
        return;
    }
    let ws = Ws::new(None);
    let userbase = ws.path().join("ub");
    let site = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, sysconfig; print(sysconfig.get_path('purelib', 'posix_user', vars={'userbase': sys.argv[1]}))",
        ])
        .arg(&userbase)
        .output()
        .unwrap();
    let site = PathBuf::from(String::from_utf8(site.stdout).unwrap().trim());
    std::fs::create_dir_all(&site).unwrap();
    let pwned = ws.path().join("pwned");
    std::fs::write(
        site.join("evil.pth"),
        format!(
            "import os; open({:?}, 'a').write('uid=%d\\n' % os.getuid())\n",
            pwned.display().to_string()
        ),
    )
    .unwrap();
    ws.chown_all(NOBODY);
    let mut s = spec(&marked("import os; print(os.getuid())"), &ws, Some(NOBODY));
    s.env
        .insert("PYTHONUSERBASE".into(), userbase.display().to_string());
    let seen = warm(s).await;
    let pwned = std::fs::read_to_string(&pwned).unwrap_or_default();
    *ZYGOTE.lock().await = None;
    assert!(
        !pwned.lines().any(|l| l == "uid=0"),
        "the step user's .pth ran as root: {pwned:?} (step: {seen:?})"
    );
}

/// FINDING (critical, root runner): the same through `PYTHONPYCACHEPREFIX`: the root
/// zygote looks for the bytecode of the stdlib modules it imports (`json`, `socket`,
/// `ctypes`, ...) under a tree the step user owns, and loads a `.pyc` planted there whose
/// header matches the real source's mtime and size (anyone can `stat` it). Without a
/// planted file it writes root-owned files into that tree instead (links planted there
/// steer those writes).
#[tokio::test]
async fn a_steps_pycache_prefix_does_not_run_code_as_the_zygotes_root() {
    let _serial = SERIAL.lock().await;
    if !is_root() {
        return;
    }
    let ws = Ws::new(None);
    let prefix = ws.path().join("pyc");
    let pwned = ws.path().join("pwned");
    // What a step user can compute: the cached path and a timestamp pyc for the real
    // source of `json` (its mtime and size), holding other code.
    let plant = py(r#"
        import sys, os, importlib.util, importlib._bootstrap_external as ext, json
        prefix, pwned = sys.argv[1], sys.argv[2]
        src = json.__file__
        sys.pycache_prefix = prefix
        target = importlib.util.cache_from_source(src)
        real = open(src).read()
        evil = "import os\nopen(%r, 'a').write('uid=%%d\\n' %% os.getuid())\n" % pwned + real
        code = compile(evil, src, 'exec')
        st = os.stat(src)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, 'wb').write(ext._code_to_timestamp_pyc(code, int(st.st_mtime), st.st_size))
    "#);
    let status = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &plant])
        .arg(&prefix)
        .arg(&pwned)
        .status()
        .unwrap();
    assert!(status.success());
    ws.chown_all(NOBODY);
    let mut s = spec(&marked("import os; print(os.getuid())"), &ws, Some(NOBODY));
    s.env
        .insert("PYTHONPYCACHEPREFIX".into(), prefix.display().to_string());
    let seen = warm(s).await;
    let pwned = std::fs::read_to_string(&pwned).unwrap_or_default();
    *ZYGOTE.lock().await = None;
    assert!(
        !pwned.lines().any(|l| l == "uid=0"),
        "the step user's bytecode ran as root: {pwned:?} (step: {seen:?})"
    );
}

// ---------------------------------------------------------------------------------------
// (2) Nothing of one step is visible to the next.
// ---------------------------------------------------------------------------------------

/// Per-process randomness is not shared between two warm steps (`random`, `os.urandom`,
/// `tempfile` names, uuid4).
#[tokio::test]
async fn two_steps_draw_different_randomness() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let script = py(r#"
        import random, os, tempfile, uuid
        print(random.random(), os.urandom(8).hex(), next(tempfile._get_candidate_names()), uuid.uuid4())
    "#);
    let a = warm(spec(&marked(&script), &ws, None)).await;
    let b = warm(spec(&marked(&script), &ws, None)).await;
    assert_warm(&a);
    assert_warm(&b);
    let (a, b) = (
        a.out[1].split(' ').collect::<Vec<_>>(),
        b.out[1].split(' ').collect::<Vec<_>>(),
    );
    for i in 0..4 {
        assert_ne!(a[i], b[i], "field {i}");
    }
}

/// FINDING (low; inherent to fork): every step forked from one zygote has the same
/// address-space layout (ASLR bases of the interpreter, libc, heap and stack) and the
/// same stack-protector canary (`AT_RANDOM`), across attempts and step users, for the
/// zygote's whole life. One step learns them; a later one (another author's, parsing
/// that author's input) gets no ASLR or canary protection against it. Fresh interpreters
/// each draw their own. (The string hash seed is shared the same way; documented.)
#[tokio::test]
#[ignore = "finding: steps forked from one zygote share ASLR layout and the stack canary"]
async fn two_steps_do_not_share_address_layout_or_canary() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let script = py(r#"
        import struct
        auxv = open('/proc/self/auxv', 'rb').read()
        at_random = None
        for i in range(0, len(auxv), 16):
            k, v = struct.unpack('QQ', auxv[i:i + 16])
            if k == 25:
                at_random = v
        mem = open('/proc/self/mem', 'rb', 0)
        mem.seek(at_random)
        canary = mem.read(16).hex()
        bases = {}
        for l in open('/proc/self/maps'):
            f = l.split()
            name = f[5] if len(f) > 5 else ''
            if name in ('[heap]', '[stack]') or 'libc.so' in name or name.endswith('python3.11'):
                bases.setdefault(name, f[0].split('-')[0])
        print(canary, sorted(bases.items()))
    "#);
    let a = warm(spec(&marked(&script), &ws, None)).await;
    let b = warm(spec(&marked(&script), &ws, None)).await;
    assert_warm(&a);
    assert_warm(&b);
    assert_ne!(a.out[1], b.out[1], "same canary and layout in two steps");
}

// ---------------------------------------------------------------------------------------
// (4) Parity with a fresh `python3 -u -c`.
// ---------------------------------------------------------------------------------------

/// Scripts whose observables must match both ways (as the runner's user, and under a
/// root runner as a step user).
const PARITY: &[&str] = &[
    // umask, rlimits
    "import os, resource\nprint(oct(os.umask(0)))\nprint([(n, resource.getrlimit(getattr(resource, n))) for n in sorted(dir(resource)) if n.startswith('RLIMIT_')])",
    // signal dispositions, mask, pending; capabilities, no_new_privs, seccomp
    "import signal\nprint([(s.name, str(signal.getsignal(s))) for s in signal.valid_signals() if isinstance(s, signal.Signals) and s not in (signal.SIGKILL, signal.SIGSTOP)])\nprint(signal.pthread_sigmask(signal.SIG_BLOCK, []), signal.sigpending())\nprint([l.strip() for l in open('/proc/self/status') if l.split(':')[0] in ('Umask', 'SigBlk', 'SigIgn', 'SigCgt', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp')])",
    // interpreter configuration
    "import sys\nprint(sys.flags, sys.executable, sys.prefix, sys.base_prefix, sys.warnoptions, sys._xoptions)\nprint(sys.getrecursionlimit(), sys.getswitchinterval(), sys.getfilesystemencoding(), sys.getdefaultencoding(), sys.int_info, sys.get_int_max_str_digits())",
    // stdio
    "import sys, os\nprint(repr(sys.stdin.read()), sys.stdin.isatty(), sys.stdin.encoding, sys.stdin.errors)\nprint(sys.stdout.line_buffering, sys.stdout.write_through, sys.stderr.line_buffering, sys.stdout.errors, sys.stderr.errors, type(sys.stdout.buffer).__name__, sys.stdout.isatty())\nprint(os.get_blocking(1), os.get_inheritable(0), os.get_inheritable(1), os.get_inheritable(2), os.isatty(2))",
    // __main__
    "print('__file__' in globals(), __builtins__, __loader__, __spec__)\nimport __main__, sys\nprint(__main__.__dict__ is globals(), sys.modules['__main__'] is __main__)",
    // hooks, filters, gc, import machinery
    "import sys, warnings, gc\nprint(sys.excepthook is sys.__excepthook__, sys.displayhook is sys.__displayhook__, sys.unraisablehook is sys.__unraisablehook__, sys.breakpointhook is sys.__breakpointhook__)\nprint(warnings.filters)\nprint(gc.isenabled(), gc.get_threshold())\nprint([type(f).__name__ for f in sys.meta_path], len(sys.path_hooks))",
    // threads, faulthandler, tempfile, session
    "import threading, faulthandler, tempfile, os\nprint(threading.active_count(), threading.current_thread() is threading.main_thread(), threading.main_thread().name, [t.name for t in threading.enumerate()])\nprint(faulthandler.is_enabled(), tempfile.gettempdir())\nprint(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid(), os.tcgetpgrp(0) if os.isatty(0) else 'no tty')",
    // multiprocessing (fork and spawn)
    "import multiprocessing as mp\nfor method in ('fork', 'spawn', 'forkserver'):\n    with mp.get_context(method).Pool(2) as p:\n        print(method, p.map(abs, [-1, -2]))",
    // exit paths
    "import os\nos._exit(7)",
    "raise SystemExit(256)",
    "import sys\nsys.exit(None)",
    "import atexit\natexit.register(int, 'x')\nprint('x')",
    "import sys\nsys.excepthook = lambda t, v, tb: print('hook', t.__name__, tb.tb_frame.f_code.co_name, tb.tb_next)\nraise ValueError('v')",
    "import sys\nsys.stdout.close()\nprint('after close')",
    "import threading\ndef f():\n    raise ValueError('in thread')\nt = threading.Thread(target=f); t.start(); t.join()\nprint('main')",
];

#[tokio::test]
async fn parity_holds_for_process_state_hooks_and_exits() {
    let _serial = SERIAL.lock().await;
    for user in users() {
        let ws = Ws::new(user);
        for script in PARITY {
            let f = fresh(spec(&marked(script), &ws, user)).await;
            let w = warm(spec(&marked(script), &ws, user)).await;
            assert_eq!(f.out.first().map(String::as_str), Some("FRESH"), "{f:?}");
            assert_warm(&w);
            assert_eq!(
                without_mark(w),
                without_mark(f),
                "user {user:?}, script:\n{script}"
            );
        }
    }
}

/// Runs `script` both ways (as the runner's user) with `env` added; the warm run must
/// really be warm — unless `env` changes how an interpreter starts (`PYTHONPATH`,
/// `LD_*`, ...), which sends a step to a fresh interpreter: then it must be fresh.
async fn both(script: &str, ws: &Ws, env: &[(&str, String)]) -> (Seen, Seen) {
    let with = |script: &str| {
        let mut s = spec(script, ws, None);
        for (k, v) in env {
            s.env.insert((*k).to_string(), v.clone());
        }
        s
    };
    let f = fresh(with(&marked(script))).await;
    let spec = with(&marked(script));
    let forked = startup_env(&spec.env).is_some();
    let w = warm(spec).await;
    assert_eq!(f.out.first().map(String::as_str), Some("FRESH"), "{f:?}");
    if forked {
        assert_warm(&w);
    } else {
        assert_eq!(w.out.first().map(String::as_str), Some("FRESH"), "{w:?}");
    }
    (f, w)
}

fn without_mark(seen: Seen) -> Seen {
    Seen {
        out: seen.out[1..].to_vec(),
        ..seen
    }
}

/// GAP: `TZ` is read once, by the zygote (whose environment has no `TZ`): `time.tzname`
/// and `time.localtime` in a warm step follow `/etc/localtime`, not the step's `TZ`
/// (which the runner's base environment passes on). `time` is a start-up module, so it
/// is not re-imported, and glibc's `localtime_r` does not re-read `TZ`.
#[tokio::test]
async fn parity_tz() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let script = "import time, datetime\nprint(time.tzname, time.timezone, time.strftime('%H %Z', time.localtime(0)), datetime.datetime.fromtimestamp(0))";
    let (f, w) = both(script, &ws, &[("TZ", "EST5EDT".into())]).await;
    assert_eq!(without_mark(w), without_mark(f));
}

/// GAP: `sys.stdout` was set up on the zygote's `/dev/null`, which is seekable; the
/// io objects cached that, so in a warm step `sys.stdout.seekable()` is True on a pipe
/// and `tell()` raises `OSError` (ESPIPE) instead of `io.UnsupportedOperation`.
#[tokio::test]
async fn parity_stdout_seekable() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let script = "import sys\ntry:\n    sys.stdout.tell(); r = 'ok'\nexcept Exception as e:\n    r = type(e).__name__\nprint(sys.stdout.seekable(), sys.stdout.buffer.seekable(), r)";
    let (f, w) = both(script, &ws, &[]).await;
    assert_eq!(without_mark(w), without_mark(f));
}

/// GAP: the script runs three frames deep (`_run_child`, the zygote's `<module>`, the
/// bootstrap's `<module>`): at top
/// level `sys._getframe(1)` succeeds, `warnings.warn(..., stacklevel=2)` is attributed to
/// a line of the zygote, `traceback.print_stack()` shows the zygote's frames, and the
/// zygote's globals (`_serve`, `_libc`, ...) are reachable through `f_back`.
#[tokio::test]
#[ignore = "finding (parity): the script's frame has the zygote's frames above it (sys._getframe(1), warnings stacklevel, print_stack)"]
async fn parity_call_stack() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let script = "import sys, warnings, traceback\ntry:\n    sys._getframe(1); r = 'deeper'\nexcept ValueError:\n    r = 'top'\nprint(r)\nwarnings.warn('w', UserWarning, stacklevel=2)\ntraceback.print_stack()";
    let (f, w) = both(script, &ws, &[]).await;
    assert_eq!(without_mark(w), without_mark(f));
}

/// GAP: an exception raised by a user's `sys.excepthook` is handled by CPython as
/// "Error in sys.excepthook: ... Original exception was: ..." (exit 1); the zygote calls
/// the hook itself, so the hook's exception escapes `_run_child` as a chained traceback
/// that names the zygote's code.
#[tokio::test]
async fn parity_failing_excepthook() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let script = "import sys\ndef hook(*a):\n    raise RuntimeError('in hook')\nsys.excepthook = hook\nraise ValueError('v')";
    let (f, w) = both(script, &ws, &[]).await;
    assert_eq!(without_mark(w), without_mark(f));
}

/// GAP: `/proc/self/environ` and `/proc/self/cmdline` of a warm step are the zygote's
/// (its start-up environment and `-c BOOTSTRAP <zygote.py>`), and `os.getppid()` is the
/// zygote.
/// Besides tools that read them (psutil, ps), this weakens the reaper: a step process
/// that forks without exec carries no `PLUE_STEP_COOKIE` in `/proc/<pid>/environ`, so
/// the sweep's cookie net does not find it (the cgroup and session rules still do).
#[tokio::test]
#[ignore = "finding (parity): /proc/self/environ and cmdline of a warm step are the zygote's (no PLUE_STEP_COOKIE for the sweep)"]
async fn parity_proc_self_environ_and_cmdline() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let script = "import os\nenv = open('/proc/self/environ', 'rb').read().split(b'\\0')\nprint(any(e.startswith(b'PLUE_STEP_COOKIE=') for e in env), b'RT_RUNNER=' + os.environ['RT_RUNNER'].encode() in env)\nimport sys\nprint(open('/proc/self/cmdline', 'rb').read().split(b'\\0')[3].decode() == sys.orig_argv[3])";
    let (f, w) = both(script, &ws, &[]).await;
    assert_eq!(without_mark(w), without_mark(f));
}

/// GAP: the dynamic loader read `LD_LIBRARY_PATH` when the zygote started (without it):
/// a warm step's `ctypes.CDLL`/extension modules do not find libraries its
/// `LD_LIBRARY_PATH` names. (`LD_PRELOAD`, `GLIBC_TUNABLES`, `MALLOC_*` likewise do not
/// apply to the step's own process.)
#[tokio::test]
async fn parity_ld_library_path() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let lib = ws.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::copy(
        "/lib/x86_64-linux-gnu/libz.so.1",
        lib.join("libplueprobe.so"),
    )
    .unwrap();
    let script = "import ctypes\ntry:\n    ctypes.CDLL('libplueprobe.so'); print('loaded')\nexcept OSError as e:\n    print('not found')";
    let (f, w) = both(
        script,
        &ws,
        &[("LD_LIBRARY_PATH", lib.display().to_string())],
    )
    .await;
    assert_eq!(without_mark(w), without_mark(f));
}

/// GAP: `.pth` files run once, in the zygote, with the zygote's (cleared) environment:
/// one that reads a variable (setuptools' `distutils-precedence.pth` reads
/// `SETUPTOOLS_USE_DISTUTILS`, coverage's reads `COVERAGE_PROCESS_START`) does not see the
/// step's.
#[tokio::test]
async fn parity_pth_files_see_the_steps_environment() {
    let _serial = SERIAL.lock().await;
    if !Path::new("/usr/lib/python3/dist-packages/distutils-precedence.pth").exists() {
        return;
    }
    let ws = Ws::new(None);
    let script = "import sys\nprint(sorted(type(f).__name__ for f in sys.meta_path))";
    let (f, w) = both(
        script,
        &ws,
        &[("SETUPTOOLS_USE_DISTUTILS", "stdlib".into())],
    )
    .await;
    assert_eq!(without_mark(w), without_mark(f));
}

/// GAP: a relative `PYTHONPATH` (`PYTHONPATH=src`, common) is made absolute by `site`
/// at start-up, against the zygote's private directory, not the step's workspace.
#[tokio::test]
async fn parity_relative_pythonpath() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    std::fs::create_dir(ws.path().join("src")).unwrap();
    std::fs::write(ws.path().join("src/rtmod.py"), "X = 42\n").unwrap();
    let script = "import sys\ntry:\n    import rtmod; print(rtmod.X)\nexcept ImportError as e:\n    print(e)";
    let (f, w) = both(script, &ws, &[("PYTHONPATH", "src".into())]).await;
    *ZYGOTE.lock().await = None;
    assert_eq!(without_mark(w), without_mark(f));
}

/// GAP: the user site named by `PYTHONUSERBASE` is added (or not) when the zygote
/// starts: one created by an earlier step of the same start-up environment (`pip install
/// --user`) is missing from a warm step's `sys.path`.
#[tokio::test]
async fn parity_user_site_created_after_the_zygote() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let userbase = ws.path().join("ub");
    let env = [("PYTHONUSERBASE", userbase.display().to_string())];
    // The zygote starts for this environment while the user site does not exist yet.
    let (_, first) = both("print(1)", &ws, &env).await;
    assert_eq!(
        first.out,
        ["FRESH", "1"],
        "PYTHONUSERBASE: a fresh interpreter"
    );
    let create = "import site, os\nos.makedirs(site.getusersitepackages())\nopen(os.path.join(site.getusersitepackages(), 'rtusermod.py'), 'w').write('X = 7')\nprint('made')";
    let mut made = spec(create, &ws, None);
    made.env.insert(env[0].0.into(), env[0].1.clone());
    let made = warm(made).await;
    assert_eq!(made.ending, Ending::Exited(0), "{made:?}");
    let script =
        "try:\n    import rtusermod; print(rtusermod.X)\nexcept ImportError as e:\n    print(e)";
    let (f, w) = both(script, &ws, &env).await;
    *ZYGOTE.lock().await = None;
    assert_eq!(without_mark(w), without_mark(f));
}

/// GAP: with `PYTHONWARNINGS=default` (or `-W default`-like settings) every warm step
/// prints `<string>:188: ResourceWarning: unclosed <socket.socket fd=3, family=1,
/// type=5, proto=0>` on its stderr: the zygote's control `socket` object, whose fd the
/// child closed with `os.close`, is finalised when `_serve` returns in the child.
#[tokio::test]
async fn parity_resource_warnings_of_the_zygote() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let mut differ = Vec::new();
    for env in [
        ("PYTHONWARNINGS", "default"),
        ("PYTHONDEVMODE", "1"),
        ("PYTHONTRACEMALLOC", "5"),
    ] {
        let (f, w) = both("print('x')", &ws, &[(env.0, env.1.to_string())]).await;
        if without_mark(w.clone()) != without_mark(f.clone()) {
            differ.push((env, w.err, f.err));
        }
    }
    *ZYGOTE.lock().await = None;
    assert!(differ.is_empty(), "{differ:#?}");
}

/// FINDING (tests; latent in production): `PR_SET_PDEATHSIG` fires when the *thread*
/// that spawned the zygote exits, not the runner process. A zygote started from a thread
/// that later ends (a `spawn_blocking` thread, a `block_in_place`d worker, a per-test
/// runtime) is SIGKILLed: steps after it silently take the fresh path, a step in flight
/// fails ("python zygote: the python zygote is gone"). In this crate's tests (one
/// runtime thread per test), this makes `tests.rs` fall back to fresh interpreters at
/// random, so its parity corpus can compare fresh with fresh.
#[tokio::test]
async fn a_zygote_outlives_the_thread_that_started_it() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    let s = spec(&marked("print('hi')"), &ws, None);
    let pid = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            *ZYGOTE.lock().await = None;
            let (tx, mut rx) = mpsc::channel(16);
            let ended = run(s, tx, CancellationToken::new()).await.unwrap();
            assert_eq!(ended.ending, Ending::Exited(0));
            assert_eq!(rx.recv().await.map(|l| l.1).as_deref(), Some("WARM"));
            ZYGOTE.lock().await.as_ref().map(|z| z.child.id()).unwrap()
        })
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let alive = alive(pid as i32);
    *ZYGOTE.lock().await = None;
    assert!(
        alive,
        "the zygote {pid} died with the thread that started it"
    );
}

/// GAP: on an uncaught `KeyboardInterrupt` the child runs `import signal` itself, after
/// `chdir` to the workspace with `''` first on `sys.path`: a workspace file `signal.py`
/// is imported (and breaks the exit), where CPython's own exit path imports nothing.
#[tokio::test]
async fn parity_keyboard_interrupt_with_a_workspace_signal_module() {
    let _serial = SERIAL.lock().await;
    let ws = Ws::new(None);
    std::fs::write(
        ws.path().join("signal.py"),
        "print('workspace signal.py imported')\n",
    )
    .unwrap();
    let (f, w) = both("raise KeyboardInterrupt", &ws, &[]).await;
    assert_eq!(without_mark(w), without_mark(f));
}

// ---------------------------------------------------------------------------------------
// (5) A step is a closed room (issue 30): no_new_privs, its own places and IPC.
// ---------------------------------------------------------------------------------------

/// Every warm child has `no_new_privs`, as the runner's user and as a step user.
#[tokio::test]
async fn a_warm_step_has_no_new_privs() {
    let _serial = SERIAL.lock().await;
    for user in users() {
        let ws = Ws::new(user);
        let script = py(r#"
            print([l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs:')])
        "#);
        let seen = warm(spec(&marked(&script), &ws, user)).await;
        assert_warm(&seen);
        assert_eq!(seen.out[1..], ["['1']".to_string()], "{user:?}: {seen:?}");
    }
}

/// Set in the child process [`a_confined_zygotes_spare_makes_the_steps_namespaces_while_it_waits`]
/// runs its checks in: a mount namespace of its own, where its mounts stay.
const OWN_NAMESPACE_CHILD: &str = "PLUE_ZYGOTE_TEST_OWN_NAMESPACE";

/// A root runner's zygote makes each spare's mount and IPC namespaces while it waits (off
/// the step's path): the waiting spare is already in namespaces other than the zygote's,
/// and the step it becomes is as confined as a fresh step — what was mounted in the
/// runner's namespace while it waited is there (below a shared mount, as systemd makes
/// `/` on most hosts, and below a private one, as containers make it, which propagates
/// nothing: the spare makes its namespaces anew), every mount is private (none left a
/// slave of the runner's), `/tmp` is its own; with nothing mounted meanwhile it keeps the
/// ones it made. A step of the other kind (the runner's own user) gets a zygote of its
/// own, and the runner's namespaces. Run in a child process with a mount namespace of its
/// own, where the test mounts what it needs.
#[test]
fn a_confined_zygotes_spare_makes_the_steps_namespaces_while_it_waits() {
    if !is_root() {
        return;
    }
    if std::env::var_os(OWN_NAMESPACE_CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::python_zygote::redteam::a_confined_zygotes_spare_makes_the_steps_namespaces_while_it_waits",
                "--test-threads=1",
            ])
            .env(OWN_NAMESPACE_CHILD, "1")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.contains("1 passed"), "{said}");
        return;
    }
    // This thread's own namespace (the threads it starts from now on share it), whose
    // mounts never reach the test's.
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
    let none = None::<&str>;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).unwrap();
    global().block_on(spare_makes_the_namespaces());
}

async fn spare_makes_the_namespaces() {
    use nix::mount::{mount, MsFlags};
    let none = None::<&str>;
    let tmpfs_on = |path: &Path| {
        mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::empty(), none).unwrap();
    };
    // A process's mount and IPC namespaces, as `mnt:[N] ipc:[M]`.
    let namespaces = |pid: &str| {
        let link = |kind: &str| {
            std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
                .map(|l| l.display().to_string())
                .unwrap_or_default()
        };
        (link("mnt"), link("ipc"))
    };
    let said = |(mnt, ipc): &(String, String)| format!("{mnt} {ipc}");
    let own = namespaces("thread-self");
    let ws = Ws::new(Some(NOBODY));
    let shared = ws.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    tmpfs_on(&shared);
    mount(none, &shared, none, MsFlags::MS_SHARED, none).unwrap();
    let late = shared.join("late");
    std::fs::create_dir(&late).unwrap();
    let private = ws.path().join("private");
    std::fs::create_dir(&private).unwrap();
    tmpfs_on(&private);
    let late_private = private.join("late");
    std::fs::create_dir(&late_private).unwrap();
    let step = spec(
        &marked(&py(&format!(
            r#"
            import os
            print(os.readlink('/proc/self/ns/mnt'), os.readlink('/proc/self/ns/ipc'))
            print(os.path.ismount({late:?}), os.path.ismount({late_private:?}))
            tags = set()
            tmp = None
            for line in open('/proc/self/mountinfo'):
                fields, kind = line.split(' - ')
                fields = fields.split()
                tags |= {{t.split(':')[0] for t in fields[6:]}}
                if fields[4] == '/tmp':
                    tmp = kind.split()[0]
            print(sorted(tags), tmp)
        "#,
            late = late.display().to_string(),
            late_private = late_private.display().to_string(),
        ))),
        &ws,
        Some(NOBODY),
    );
    let users = StepUsers::Range {
        first: NOBODY.uid,
        count: 1,
    };
    assert!(prewarm(&step.program, &step.env, users).await);
    let zygote = super::tests::zygote_pid().await;
    // The spare, once it made its namespaces (it arms itself first).
    let made = |spare: i32| {
        let (mnt, ipc) = namespaces(&spare.to_string());
        !mnt.is_empty() && mnt != own.0 && ipc != own.1
    };
    let spare = super::tests::spare_of(zygote, "the spare made its namespaces", made).await;
    let waiting = said(&namespaces(&spare.to_string()));
    // With nothing mounted meanwhile, the step keeps the namespaces its spare made.
    let seen = warm(step.clone()).await;
    assert_warm(&seen);
    assert_eq!(seen.out[1], waiting, "the spare's namespaces: {seen:?}");
    assert_eq!(seen.out[2..], ["False False", "[] tmpfs"], "{seen:?}");
    // Mounted in the runner's namespace while the next spare waits (once it made its
    // namespaces): a fresh step sees both, below the shared mount and the private one.
    super::tests::spare_of(zygote, "the next spare made its namespaces", made).await;
    tmpfs_on(&late);
    tmpfs_on(&late_private);
    let seen = warm(step.clone()).await;
    assert_warm(&seen);
    let fresh = fresh(step).await;
    assert_eq!(
        fresh.out[2..],
        ["True True", "[] tmpfs"],
        "a fresh step: {fresh:?}"
    );
    assert_eq!(seen.out[2..], fresh.out[2..], "{seen:?}");
    assert_eq!(
        super::tests::zygote_pid().await,
        zygote,
        "the step used the zygote started ahead"
    );

    // The runner's own user: another zygote, and the runner's namespaces.
    let ws = Ws::new(None);
    let step = spec(
        &marked(
            "import os\nprint(os.readlink('/proc/self/ns/mnt'), os.readlink('/proc/self/ns/ipc'))",
        ),
        &ws,
        None,
    );
    let seen = warm(step).await;
    assert_warm(&seen);
    assert_eq!(seen.out[1], said(&own), "{seen:?}");
    assert_ne!(
        super::tests::zygote_pid().await,
        zygote,
        "a zygote of the other kind"
    );
}

/// The harvest of issue 30, through the zygote: a warm step of uid U leaves a set-uid
/// `bash`, files in every shared place and a SysV segment; the next warm step of the same
/// uid finds none of them, nor does the host. A set-uid `bash` of another user placed in
/// the workspace runs as U.
#[tokio::test]
async fn a_later_warm_step_of_the_same_uid_finds_nothing_an_earlier_one_left() {
    let _serial = SERIAL.lock().await;
    if !is_root() {
        return;
    }
    let user = StepUser {
        uid: 3_999_041,
        gid: 3_999_041,
    };
    let ws = Ws::new(Some(user));
    let planted = ws.path().join("suid-bash");
    std::fs::copy("/bin/bash", &planted).unwrap();
    std::os::unix::fs::chown(&planted, Some(3_999_042), Some(3_999_042)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let tag = format!("plue-warm-harvest-{}", std::process::id());
    let plant = py(&format!(
        r#"
        import ctypes, os, shutil, subprocess
        shutil.copy('/bin/bash', '/tmp/{tag}-bash')
        os.chmod('/tmp/{tag}-bash', 0o4755)
        for place in ('/tmp', '/var/tmp', '/dev/shm', '/run/lock'):
            if os.path.isdir(place):
                open(os.path.join(place, '{tag}'), 'w').write('planted')
        libc = ctypes.CDLL(None, use_errno=True)
        print('segment', libc.shmget(0, 4096, 0o1666) >= 0)
        print(subprocess.run(['./suid-bash', '-p', '-c', 'id -u'], capture_output=True, text=True).stdout.strip())
    "#
    ));
    let seen = warm(spec(&marked(&plant), &ws, Some(user))).await;
    assert_warm(&seen);
    assert_eq!(
        seen.out[1..],
        ["segment True".to_string(), "3999041".to_string()],
        "{seen:?}"
    );
    let look = py(&format!(
        r#"
        import os
        found = []
        for place in ('/tmp', '/var/tmp', '/dev/shm', '/run/lock'):
            if os.path.isdir(place):
                found += [os.path.join(place, n) for n in os.listdir(place) if '{tag}' in n]
        found += open('/proc/sysvipc/shm').read().splitlines()[1:]
        print(found)
    "#
    ));
    let seen = warm(spec(&marked(&look), &ws, Some(user))).await;
    assert_warm(&seen);
    assert_eq!(seen.out[1..], ["[]".to_string()], "{seen:?}");
    for place in ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"] {
        for name in [tag.clone(), format!("{tag}-bash")] {
            let path = Path::new(place).join(name);
            assert!(!path.exists(), "{} is on the host", path.display());
        }
    }
    let host = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    assert!(
        !host
            .lines()
            .any(|l| l.split_whitespace().nth(7) == Some("3999041")),
        "{host}"
    );
}

/// Issue 30's keyring channel, through the zygote: a warm step (as the runner's user and
/// as a step user) can neither store a key in its uid's keyring for the next holder of the
/// uid nor search one there — every keyring call fails with EPERM (`launch::seccomp`).
#[tokio::test]
async fn a_warm_step_can_neither_store_nor_read_a_kernel_key() {
    let _serial = SERIAL.lock().await;
    for user in users() {
        let ws = Ws::new(user);
        let script = format!(
            "import sys\nsys.argv[1:] = ['{}', '{}']\n{}",
            libc::SYS_add_key,
            libc::SYS_keyctl,
            crate::launch::tests::KEYRING_PROBE
        );
        let seen = warm(spec(&marked(&script), &ws, user)).await;
        assert_warm(&seen);
        let eperm = libc::EPERM;
        assert_eq!(
            seen.out[1..],
            [format!("add_key -1 {eperm}"), format!("keyctl -1 {eperm}")],
            "{user:?}: {seen:?}"
        );
    }
}
