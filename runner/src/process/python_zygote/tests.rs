//! Parity of the warm zygote with a fresh `python3 -u -c`, and attacks on the zygote.
//!
//! Why one file past ~600 lines: parity checks against a fresh `python3` on one zygote
//! fixture.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::super::{run, run_contained};
use super::*;
use crate::containment::Mode;
use crate::step_user::StepUser;

/// The zygote is one per process: tests that look at it or kill it take turns.
pub(super) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn python() -> PathBuf {
    PathBuf::from("/usr/bin/python3")
}

/// A step's working directory, with the `home/` its [`spec`] names.
fn step_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("home")).unwrap();
    dir
}

fn spec(script: &str, dir: &Path, timeout: Duration) -> ProcessSpec {
    ProcessSpec {
        program: python(),
        args: vec!["-u".into(), "-c".into(), script.into()],
        cwd: dir.to_owned(),
        env: BTreeMap::from([
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("HOME".to_string(), dir.join("home").display().to_string()),
            ("PLUE_TEST_VALUE".to_string(), "a b\nc".to_string()),
        ]),
        user: None,
        timeout,
        masker: Default::default(),
        fresh_interpreter: false,
        network: None,
    }
}

async fn collect(spec: ProcessSpec, warm: bool) -> (Ending, Vec<(Stream, String)>) {
    let (tx, mut rx) = mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    });
    let cancel = CancellationToken::new();
    let result = if warm {
        run(spec, tx, cancel).await
    } else {
        run_contained(spec, tx, cancel, Mode::Auto).await
    }
    .expect("run");
    (result.ending, collector.await.unwrap())
}

/// The ending and each stream's lines (the two pipes are read independently, so their
/// interleaving is not observable), with the per-step cookie blanked.
fn observed(
    (ending, lines): (Ending, Vec<(Stream, String)>),
) -> (Ending, Vec<String>, Vec<String>) {
    let cookie = regex_free_blank;
    let of = |stream| {
        lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| cookie(l))
            .collect()
    };
    (ending, of(Stream::Stdout), of(Stream::Stderr))
}

/// `line` with the value of `PLUE_STEP_COOKIE` (as printed by `sorted(os.environ.items())`)
/// blanked.
fn regex_free_blank(line: &str) -> String {
    match line.find("('PLUE_STEP_COOKIE', '") {
        Some(start) => {
            let value = start + "('PLUE_STEP_COOKIE', '".len();
            let end = value + line[value..].find('\'').unwrap_or(0);
            format!("{}{}", &line[..value], &line[end..])
        }
        None => line.to_owned(),
    }
}

/// Scripts whose every observable (lines per stream, ending) must be the same both ways.
const CORPUS: &[&str] = &[
    "import os, sys\nprint(__name__, sys.argv, repr(sys.path[0]), os.getcwd())\n\
     print(sorted(os.environ.items()))\nprint(sys.orig_argv[1:3], sys.flags.dont_write_bytecode)\n\
     print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())\n\
     print(sorted(globals()), __doc__, __spec__, __package__)\n\
     print(sorted(sys.modules))\nprint(sys.path)\nprint(sys.stdout.encoding, sys.stdout.line_buffering)\nimport site\nprint(site.ENABLE_USER_SITE, site.getusersitepackages())",
    "import sys\nprint('out'); print('err', file=sys.stderr); sys.stdout.write('no newline')\nsys.exit(3)",
    "def f():\n    return 1 / 0\nprint('before')\nf()",
    "x = (",
    "import sys\nsys.exit('a message')",
    "import atexit\natexit.register(lambda: print('at exit'))\nprint('main')",
    "import os\nos.kill(os.getpid(), 9)",
    "import threading, time\nt = threading.Thread(target=lambda: (time.sleep(0.05), print('thread')))\nt.start()\nprint('main')",
    "import json, email.message\nprint(json.dumps({'a': 1}), email.message.Message)",
    "raise KeyboardInterrupt",
    // Modules the zygote holds ready-made come into `sys.modules` as a fresh import brings
    // them (the same modules, in the same order), with their own spec and loader.
    "import sys\nbefore = list(sys.modules)\nimport json\nprint([m for m in sys.modules if m not in before])\n\
     s = json.__spec__\nprint(s.name, s.origin, s.submodule_search_locations, s.loader is json.__loader__, type(json.__loader__), json.__file__)\n\
     print(json.decoder.re is sys.modules['re'], json.loads('{\"a\": [1, 2.5]}'), json.dumps({'b': None}))",
    "import sys\nbefore = list(sys.modules)\nimport re._parser\nfrom collections import abc\nimport signal, socket\n\
     print([m for m in sys.modules if m not in before], re.sub('a+', '-', 'caaab'), abc.Mapping)\n\
     print(list(sys.modules)[-3:], socket.AF_INET, signal.SIGTERM, re.__spec__.origin)",
    // Found by the review: a module the step loaded (and may have changed) is used as it
    // is, a submodule a later import brings keeps its attribute, `find_spec` loads nothing,
    // the served loader reads the package's data.
    "import re\norig = re.compile\nre.compile = lambda p, f=0: (print('compile'), orig(p, f))[1]\nimport json",
    "import json, socket, collections\nprint(isinstance({}, collections.abc.Mapping))",
    "import importlib.util, pkgutil, sys\nbefore = len(sys.modules)\nspec = importlib.util.find_spec('json')\n\
     print(len(sys.modules) - before, spec.has_location, spec.cached, len(pkgutil.get_data('json', '__init__.py')))",
    // A thread running: the import takes the ordinary path.
    "import sys, threading, time\nt = threading.Thread(target=time.sleep, args=(0.05,))\nt.start()\n\
     before = list(sys.modules)\nimport json\nprint([m for m in sys.modules if m not in before])\nt.join()",
    // An import that fails half-way leaves what a fresh one leaves.
    "import sys\nsys.modules['enum'] = None\nbefore = list(sys.modules)\ntry:\n    import json\n\
     except ImportError as e:\n    print('failed', e)\nprint([m for m in sys.modules if m not in before])",
    // The C environment matches `os.environ`, and changes to either reach children.
    "import os, ctypes, subprocess\nlibc = ctypes.CDLL(None)\nlibc.getenv.restype = ctypes.c_char_p\n\
     print(libc.getenv(b'PLUE_TEST_VALUE'), libc.getenv(b'HOME') is not None, libc.getenv(b'NOPE'))\n\
     block = ctypes.POINTER(ctypes.c_char_p).in_dll(libc, 'environ')\n\
     entries = []\nwhile block[len(entries)] is not None:\n    entries.append(block[len(entries)])\n\
     print([e.split(b'=')[0] for e in entries] == [k for k in os.environb])\n\
     os.environ['ADDED'] = 'x'\ndel os.environ['PLUE_TEST_VALUE']\nos.putenv('PUT', 'y')\n\
     seen = subprocess.run(['/usr/bin/env'], capture_output=True, text=True).stdout.splitlines()\n\
     print(sorted(line.split('=')[0] for line in seen))\nprint(libc.getenv(b'ADDED'), libc.getenv(b'PLUE_TEST_VALUE'))",
];

#[tokio::test]
async fn zygote_matches_a_fresh_interpreter_on_the_corpus() {
    let _serial = SERIAL.lock().await;
    let dir = step_dir();
    for script in CORPUS {
        let fresh = collect(spec(script, dir.path(), Duration::from_secs(20)), false).await;
        let warm = collect(spec(script, dir.path(), Duration::from_secs(20)), true).await;
        assert_eq!(observed(warm), observed(fresh), "script:\n{script}");
    }
}

#[tokio::test]
async fn nothing_of_one_step_is_seen_by_the_next() {
    let _serial = SERIAL.lock().await;
    let dir = step_dir();
    let first = "import json, builtins, os\nbuiltins.leak = 1\nos.environ['LEAK'] = '1'\nG = 5";
    let (ending, _) = collect(spec(first, dir.path(), Duration::from_secs(20)), true).await;
    assert_eq!(ending, Ending::Exited(0));
    let second = "import sys, builtins, os\n\
        print('json' in sys.modules, hasattr(builtins, 'leak'), 'LEAK' in os.environ, 'G' in globals())";
    let (ending, lines) = collect(spec(second, dir.path(), Duration::from_secs(20)), true).await;
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(
        lines,
        vec![(Stream::Stdout, "False False False False".to_string())]
    );
}

/// The standard-library modules the zygote holds ready-made: a workspace module of the
/// same name (or of a module they import) shadows them as in a fresh interpreter, each
/// step gets them as the zygote left them whatever an earlier step did to its own, and
/// they are the zygote's indeed (a warm import opens none of their files).
#[tokio::test]
async fn ready_made_modules_are_shadowed_and_isolated_like_fresh_imports() {
    let _serial = SERIAL.lock().await;
    let dir = step_dir();
    let both = |script: &'static str, dir: std::path::PathBuf| async move {
        let fresh = collect(spec(script, &dir, Duration::from_secs(20)), false).await;
        let warm = collect(spec(script, &dir, Duration::from_secs(20)), true).await;
        (observed(warm), observed(fresh))
    };
    let report = "import sys\nbefore = list(sys.modules)\nimport json\n\
        print(json.__file__, json.dumps([1]), [m for m in sys.modules if m not in before])\n\
        print(sys.modules['re'].__file__)";

    // A workspace `json.py`, then a workspace `re.py` that `json.decoder` imports: each
    // alone in the workspace, both ways alike.
    let shadowed = dir.path().join("shadowed");
    std::fs::create_dir_all(shadowed.join("home")).unwrap();
    let shadowed_by = |file: &'static str, source: &'static str| {
        let shadowed = shadowed.clone();
        async move {
            std::fs::write(shadowed.join(file), source).unwrap();
            let (warm, fresh) = both(report, shadowed.clone()).await;
            std::fs::remove_file(shadowed.join(file)).unwrap();
            assert_eq!(warm, fresh, "{file}");
            warm.1
        }
    };
    let out = shadowed_by(
        "json.py",
        "print('workspace json')\nimport re\ndumps = lambda value: 'workspace dumps'\n",
    )
    .await;
    assert!(
        out.iter().any(|line| line.contains("workspace dumps")),
        "{out:?}"
    );
    let out = shadowed_by(
        "re.py",
        "print('workspace re')\nraise ImportError('the workspace re refuses')\n",
    )
    .await;
    assert_eq!(
        out.first().map(String::as_str),
        Some("workspace re"),
        "{out:?}"
    );

    // A step that changes the modules it imported leaves them unchanged for the next.
    let first = "import json, re, enum, sys\njson.dumps = lambda *a, **k: 'leaked'\n\
        re.compile = None\nenum.LEAK = 1\nsys.modules['json'].loads = None";
    let (ending, _) = collect(spec(first, dir.path(), Duration::from_secs(20)), true).await;
    assert_eq!(ending, Ending::Exited(0));
    let second = "import json, re, enum\n\
        print(json.dumps([1]), re.compile is not None, hasattr(enum, 'LEAK'), json.loads('2'))";
    let (ending, lines) = collect(spec(second, dir.path(), Duration::from_secs(20)), true).await;
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(
        lines,
        vec![(Stream::Stdout, "[1] True False 2".to_string())]
    );

    // Served indeed: a fresh import opens the modules' files, a warm one opens none.
    let opened = "import sys\nopened = []\n\
        sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == 'open' else None)\n\
        import json\nprint(len([path for path in opened if '/json/' in path or '/re/' in path]))";
    let (warm, fresh) = both(opened, dir.path().to_owned()).await;
    assert_eq!(warm.1, vec!["0".to_string()], "{warm:?}");
    assert_ne!(fresh.1, vec!["0".to_string()], "{fresh:?}");
}

#[tokio::test]
async fn a_timeout_kills_the_step_and_its_children() {
    let _serial = SERIAL.lock().await;
    let dir = step_dir();
    let script = "import subprocess, time\n\
        p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n\
        print(p.pid)\ntime.sleep(300)";
    let (ending, lines) = collect(spec(script, dir.path(), Duration::from_millis(800)), true).await;
    assert_eq!(ending, Ending::TimedOut);
    let pid: i32 = lines[0].1.parse().unwrap();
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.contains(") Z "));
    assert!(!alive, "the step's child {pid} survived the timeout");
}

#[tokio::test]
async fn a_step_cannot_reach_the_zygote() {
    let _serial = SERIAL.lock().await;
    let dir = step_dir();
    // Any socket among its descriptors, or the zygote's (its parent's) descriptors or memory.
    let script = "import os\n\
        found = []\n\
        for fd in os.listdir('/proc/self/fd'):\n\
        \x20   try:\n\
        \x20       found.append(os.readlink('/proc/self/fd/' + fd))\n\
        \x20   except OSError:\n\
        \x20       pass\n\
        found = [f for f in found if f.startswith('socket:')]\n\
        zygote = os.getppid()\n\
        for path in ['/proc/%d/fd' % zygote, '/proc/%d/mem' % zygote, '/proc/%d/environ' % zygote]:\n\
        \x20   try:\n\
        \x20       if path.endswith('fd'):\n\
        \x20           found += [os.readlink(path + '/' + fd) for fd in os.listdir(path)]\n\
        \x20       else:\n\
        \x20           found.append(open(path, 'rb').read(1))\n\
        \x20   except OSError:\n\
        \x20       pass\n\
        print(found if os.getuid() != 0 else [f for f in found if isinstance(f, str) and f.startswith('socket:') and 'self' in f])";
    let (ending, lines) = collect(spec(script, dir.path(), Duration::from_secs(20)), true).await;
    assert_eq!(ending, Ending::Exited(0), "{lines:?}");
    assert_eq!(lines, vec![(Stream::Stdout, "[]".to_string())]);
}

#[tokio::test]
async fn a_dead_zygote_is_replaced() {
    let _serial = SERIAL.lock().await;
    let dir = step_dir();
    let script = "print('hi')";
    let (ending, _) = collect(spec(script, dir.path(), Duration::from_secs(20)), true).await;
    assert_eq!(ending, Ending::Exited(0));
    let first = {
        let mut slot = ZYGOTE.lock().await;
        let zygote = slot.as_mut().expect("a zygote");
        let pid = zygote.child.id();
        nix::sys::signal::kill(Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)
            .unwrap();
        // Dead before the next step looks (a step that finds it dying runs afresh).
        zygote.child.wait().unwrap();
        pid
    };
    let (ending, lines) = collect(spec(script, dir.path(), Duration::from_secs(20)), true).await;
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(lines, vec![(Stream::Stdout, "hi".to_string())]);
    let second = ZYGOTE.lock().await.as_ref().map(|z| z.child.id());
    let second = second.expect("a zygote");
    assert_ne!(first, second);
}

/// The zygote's children, as the kernel lists them (the spare waiting for the next step).
/// The pid of the zygote in the runner's slot (one must be running).
pub(super) async fn zygote_pid() -> u32 {
    ZYGOTE
        .lock()
        .await
        .as_ref()
        .map(|z| z.child.id())
        .expect("a running zygote")
}

/// The one spare of `zygote` once `ready` holds of it, within 10 s (else fails saying
/// `what`).
pub(super) async fn spare_of(zygote: u32, what: &str, ready: impl Fn(i32) -> bool) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let [spare] = children_of(zygote)[..] {
            if ready(spare) {
                return spare;
            }
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn children_of(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn is_gone_or_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A spare child (forked ahead of the next request) that was killed — a step of the
/// zygote's own uid may signal it — is replaced for the request, still warm; a spare
/// never outlives its zygote, and the runner's sweep reaps what is left of it.
#[tokio::test]
async fn a_killed_spare_is_replaced_and_a_spare_dies_with_its_zygote() {
    let _serial = SERIAL.lock().await;
    let dir = step_dir();
    let script = "import os; print(os.getppid())";
    let (zygote, spare) = the_waiting_spare(dir.path()).await;
    nix::sys::signal::kill(Pid::from_raw(spare), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_until_gone_or_zombie(spare);
    let (ending, lines) = collect(spec(script, dir.path(), Duration::from_secs(20)), true).await;
    assert_eq!(ending, Ending::Exited(0));
    // Forked by the same zygote: the warm path served it.
    assert_eq!(lines, vec![(Stream::Stdout, zygote.to_string())]);
    assert_eq!(
        ZYGOTE.lock().await.as_ref().map(|z| z.child.id()),
        Some(zygote),
        "the zygote was not replaced"
    );

    let next = children_of(zygote);
    assert_eq!(next.len(), 1, "a new spare waits: {next:?}");
    kill_the_zygote().await;
    wait_until_gone_or_zombie(next[0]);
    // The next step's end sweeps the runner's orphans: the spare is not left a zombie.
    let (ending, _) = collect(spec(script, dir.path(), Duration::from_secs(20)), true).await;
    assert_eq!(ending, Ending::Exited(0));
    assert!(
        std::fs::metadata(format!("/proc/{}", next[0])).is_err(),
        "the orphaned spare {} was never reaped",
        next[0]
    );
}

/// The waiting spare joins the cgroup the runner made for the next step while it waits (a
/// join waits for an RCU grace period after any pause: not on the step's path), and that
/// step then runs in it.
#[tokio::test]
async fn the_spare_joins_the_next_steps_cgroup_while_it_waits_and_that_step_runs_there() {
    if !crate::containment::available() {
        return; // No cgroups for steps on this host.
    }
    let _serial = SERIAL.lock().await;
    let dir = step_dir();
    let (_zygote, spare) = the_waiting_spare(dir.path()).await;
    let cgroup_of_spare = waits_in_the_spare_cgroup(spare).await;
    let (ending, lines) = collect(prints_its_cgroup(dir.path()), true).await;
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(lines, vec![(Stream::Stdout, cgroup_of_spare)]);
}

/// So does the first spare of a zygote started ahead, in the cgroup made with it for its
/// first step: no step of a fresh zygote joins its cgroup on its own path either.
#[tokio::test]
async fn a_zygote_started_ahead_waits_for_its_first_step_in_that_steps_cgroup() {
    if !crate::containment::available() {
        return; // No cgroups for steps on this host.
    }
    let _serial = SERIAL.lock().await;
    *ZYGOTE.lock().await = None;
    let dir = step_dir();
    let base = BTreeMap::from([("LANG".to_string(), "C.UTF-8".to_string())]);
    assert!(prewarm(&python(), &base, StepUsers::Same).await);
    let zygote = zygote_pid().await;
    let spare = spare_of(zygote, "the zygote forked its first spare", |_| true).await;
    let cgroup_of_spare = waits_in_the_spare_cgroup(spare).await;
    let mut step = prints_its_cgroup(dir.path());
    step.env.insert("LANG".into(), "C.UTF-8".into());
    let (ending, lines) = collect(step, true).await;
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(lines, vec![(Stream::Stdout, cgroup_of_spare)]);
    assert_eq!(
        ZYGOTE.lock().await.as_ref().map(|z| z.child.id()),
        Some(zygote),
        "the step used the zygote started ahead"
    );
}

/// Waits until `spare` is in the cgroup the zygote holds for its next step; returns the
/// spare's cgroup v2 line (`0::/...`).
async fn waits_in_the_spare_cgroup(spare: i32) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = ZYGOTE
            .lock()
            .await
            .as_ref()
            .and_then(|z| z.spare_cgroup.as_ref().map(|c| c.holds(spare)));
        if held == Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spare waits in the next step's cgroup: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::fs::read_to_string(format!("/proc/{spare}/cgroup"))
        .unwrap()
        .lines()
        .find(|line| line.starts_with("0::"))
        .map(str::to_owned)
        .expect("a cgroup v2 line")
}

/// A step that prints its own cgroup v2 line.
fn prints_its_cgroup(dir: &Path) -> ProcessSpec {
    let script = "print([l for l in open('/proc/self/cgroup') if l.startswith('0::')][0].strip())";
    spec(script, dir, Duration::from_secs(20))
}

/// The attack on a spare by a step of the zygote's own uid: it stops the spare waiting
/// for the next step, hoping it takes that step's job and runs it later, unwatched. The
/// next step runs once, in time, and the stopped spare never runs it.
#[tokio::test]
async fn a_stopped_spare_never_runs_the_next_step() {
    let _serial = SERIAL.lock().await;
    let dir = step_dir();
    let (_, spare) = the_waiting_spare(dir.path()).await;
    let stopped = Pid::from_raw(spare);
    nix::sys::signal::kill(stopped, nix::sys::signal::Signal::SIGSTOP).unwrap();

    let ran = dir.path().join("ran");
    let victim = format!(
        "import os\nwith open({:?}, 'a') as f:\n    f.write('%d %s\\n' % (os.getpid(), os.environ['VICTIM_TOKEN']))",
        ran.display().to_string()
    );
    let mut step = spec(&victim, dir.path(), Duration::from_secs(30));
    step.env.insert("VICTIM_TOKEN".into(), "s3cr3t".into());
    let started = Instant::now();
    let (ending, _) = collect(step, true).await;
    assert_eq!(ending, Ending::Exited(0));
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
    // Whatever is left of the stopped spare is woken: it must not run the step again.
    let _ = nix::sys::signal::kill(stopped, nix::sys::signal::Signal::SIGCONT);
    std::thread::sleep(Duration::from_millis(300));
    let lines = std::fs::read_to_string(&ran).unwrap();
    assert_eq!(
        lines.lines().count(),
        1,
        "the step ran more than once: {lines}"
    );
    assert!(
        !lines.starts_with(&format!("{spare} ")),
        "the stopped spare ran it"
    );
    wait_until_gone_or_zombie(spare);
}

/// A start the runner gave up on (the zygote answered late, or not at all) never runs
/// the script: the child waits for the runner's `go`, which is closed unwritten. Here the
/// child is held in its set-up (its cgroup path is a FIFO nobody reads yet) while the
/// runner gives up, then let go.
#[tokio::test]
async fn a_start_the_runner_gave_up_on_never_runs_the_script() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold");
    nix::unistd::mkfifo(&hold, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let marker = dir.path().join("ran");
    let zygote = Zygote::start(&python(), BTreeMap::new(), Steps::AsRunner).unwrap();
    let job = serde_json::json!({
        "program": "/usr/bin/python3",
        "script": format!("open({:?}, 'w').write('ran')", marker.display().to_string()),
        "cwd": dir.path(),
        "env": {"PATH": "/usr/bin:/bin"},
        "cgroup_procs": hold,
        "user": null,
        "seccomp": crate::launch::seccomp::program_hex().unwrap(),
    })
    .to_string();
    let (_out_r, out_w) = pipe().unwrap();
    let (_err_r, err_w) = pipe().unwrap();
    let (job_r, job_w) = job_pipe(job.len()).unwrap();
    std::io::Write::write_all(&mut std::fs::File::from(job_w), job.as_bytes()).unwrap();
    let (go_r, go_w) = pipe().unwrap();
    send_with_fds(
        &zygote.control,
        b"F",
        &[
            out_w.as_raw_fd(),
            err_w.as_raw_fd(),
            job_r.as_raw_fd(),
            go_r.as_raw_fd(),
        ],
    )
    .unwrap();
    drop((out_w, err_w, job_r, go_r));
    // The runner gives up while the child is still setting itself up.
    drop(go_w);
    let joined = std::fs::read_to_string(&hold).unwrap();
    assert_eq!(joined, "0", "the child reached its cgroup join");
    zygote
        .control
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = recv(&zygote.control).unwrap();
    assert!(started.starts_with("P "), "{started}");
    let ended = recv(&zygote.control).unwrap();
    assert_eq!(ended, "S 0", "the child left without running anything");
    assert!(!marker.exists(), "the script ran after the runner gave up");
}

/// Runs a warm step (starting the zygote if need be); the zygote's pid and that of the one
/// spare it then keeps waiting for the next step.
async fn the_waiting_spare(dir: &Path) -> (u32, i32) {
    let (ending, _) = collect(spec("pass", dir, Duration::from_secs(20)), true).await;
    assert_eq!(ending, Ending::Exited(0));
    let zygote = ZYGOTE
        .lock()
        .await
        .as_ref()
        .map(|z| z.child.id())
        .expect("a zygote");
    let spares = children_of(zygote);
    assert_eq!(spares.len(), 1, "one spare waits: {spares:?}");
    (zygote, spares[0])
}

async fn kill_the_zygote() {
    let mut slot = ZYGOTE.lock().await;
    let zygote = slot.as_mut().expect("a zygote");
    nix::sys::signal::kill(
        Pid::from_raw(zygote.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    zygote.child.wait().unwrap();
}

fn wait_until_gone_or_zombie(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_gone_or_zombie(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} still runs after 5 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The attack on the zygote's memory: a step forked after one that held a secret scans
/// every readable page of its own memory (which it inherited from the zygote) for it.
#[tokio::test]
async fn a_later_step_finds_no_secret_of_an_earlier_one_in_its_memory() {
    let _serial = SERIAL.lock().await;
    let dir = step_dir();
    let secret = format!("s3cr3t-{}", reaper::new_cookie());
    // Victims with more (and larger) values than the hunter, so the hunter's own start
    // cannot happen to overwrite every place an earlier step's secret could have been.
    for round in 0..3 {
        let script = format!("token = '{secret}'\nprint('held it')");
        let mut victim = spec(&script, dir.path(), Duration::from_secs(20));
        victim.env.insert("VICTIM_TOKEN".into(), secret.clone());
        for i in 0..40 {
            let value = format!("{secret}-{round}-{i}-{}", "x".repeat(i * 13));
            victim.env.insert(format!("VICTIM_{i}"), value);
        }
        let (ending, _) = collect(victim, true).await;
        assert_eq!(ending, Ending::Exited(0));
    }
    // The hunter holds each needle only as two halves, so its own needle is no hit; the
    // control (a value of its own environment) shows the scan sees what is there.
    let hunter = "import os, re\n\
        def needle(name):\n\
        \x20   whole = bytes.fromhex(os.environ[name])\n\
        \x20   return whole[:8], bytearray(whole[8:])\n\
        needles = [needle('NEEDLE_HEX'), needle('CONTROL_HEX')]\n\
        hits = [0, 0]\n\
        mem = open('/proc/self/mem', 'rb', 0)\n\
        for line in open('/proc/self/maps').readlines():\n\
        \x20   m = re.match(r'([0-9a-f]+)-([0-9a-f]+) r', line)\n\
        \x20   if not m or '[vvar' in line or '[vsyscall' in line:\n\
        \x20       continue\n\
        \x20   start, end = int(m.group(1), 16), int(m.group(2), 16)\n\
        \x20   try:\n\
        \x20       mem.seek(start)\n\
        \x20       data = mem.read(end - start)\n\
        \x20   except OSError:\n\
        \x20       continue\n\
        \x20   for i, (head, tail) in enumerate(needles):\n\
        \x20       at = data.find(head)\n\
        \x20       while at >= 0:\n\
        \x20           hits[i] += data[at + 8:at + 8 + len(tail)] == tail\n\
        \x20           at = data.find(head, at + 1)\n\
        \x20   del data\n\
        print('secret', hits[0], 'control found', hits[1] > 0)";
    let mut scan = spec(hunter, dir.path(), Duration::from_secs(60));
    let needle: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    scan.env.insert("NEEDLE_HEX".into(), needle);
    let control = format!("c0ntr0l-{}", reaper::new_cookie());
    let control_hex: String = control.bytes().map(|b| format!("{b:02x}")).collect();
    scan.env.insert("CONTROL".into(), control);
    scan.env.insert("CONTROL_HEX".into(), control_hex);
    let pid_before = ZYGOTE.lock().await.as_ref().map(|z| z.child.id());
    let (ending, lines) = collect(scan, true).await;
    let pid_after = ZYGOTE.lock().await.as_ref().map(|z| z.child.id());
    assert_eq!(ending, Ending::Exited(0), "{lines:?}");
    assert_eq!(
        lines,
        vec![(Stream::Stdout, "secret 0 control found True".to_string())]
    );
    assert!(
        pid_before.is_some() && pid_before == pid_after,
        "one zygote served both"
    );
}

/// Under a root runner a step forked from the (root) zygote runs as the attempt's user,
/// with a private `/proc`, exactly like one started afresh.
#[tokio::test]
async fn a_root_runners_step_runs_as_its_user_like_a_fresh_one() {
    let _serial = SERIAL.lock().await;
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = step_dir();
    let nobody = StepUser {
        uid: 65534,
        gid: 65534,
    };
    std::os::unix::fs::chown(dir.path(), Some(nobody.uid), Some(nobody.gid)).unwrap();
    std::os::unix::fs::chown(dir.path().join("home"), Some(nobody.uid), Some(nobody.gid)).unwrap();
    let script = "import os\n\
        print(os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())\n\
        print(sorted(p for p in os.listdir('/proc') if p.isdigit()) == [str(os.getpid())])\n\
        print(os.getcwd(), open('/proc/self/status').read().count('CapEff:\\t0000000000000000'))\n\
        open('mine', 'w').write('x'); print(os.stat('mine').st_uid)";
    let mut runs = Vec::new();
    for warm in [false, true] {
        let mut spec = spec(script, dir.path(), Duration::from_secs(20));
        spec.user = Some(nobody);
        let result = observed(collect(spec, warm).await);
        let _ = std::fs::remove_file(dir.path().join("mine"));
        runs.push(result);
    }
    assert_eq!(runs[0].0, Ending::Exited(0), "{:?}", runs[0]);
    assert_eq!(runs[1], runs[0]);
    assert_eq!(runs[1].1[0], "65534 65534 65534 65534 []");
}

/// `fresh_interpreter` (the plan's opt-out) starts the interpreter afresh: its parent is
/// the runner, not the zygote.
#[tokio::test]
async fn a_step_that_opts_out_gets_a_fresh_interpreter() {
    let _serial = SERIAL.lock().await;
    let dir = step_dir();
    let runner = std::process::id().to_string();
    for fresh in [false, true] {
        let mut spec = spec(
            "import os; print(os.getppid())",
            dir.path(),
            Duration::from_secs(20),
        );
        spec.fresh_interpreter = fresh;
        let (ending, lines) = collect(spec, true).await;
        assert_eq!(ending, Ending::Exited(0));
        assert_eq!(lines[0].1 == runner, fresh, "fresh={fresh}: {lines:?}");
    }
}

#[test]
fn the_start_answer_says_what_stayed_shared() {
    assert_eq!(super::parse_started("42"), Some((42, 0)));
    assert_eq!(super::parse_started("42 shared 3"), Some((42, 3)));
    for bad in [
        "",
        "x",
        "42 shared",
        "42 shared x",
        "42 other 1",
        "42 shared 1 more",
    ] {
        assert_eq!(super::parse_started(bad), None, "{bad:?}");
    }
}

#[tokio::test]
async fn a_zygote_started_ahead_serves_the_steps_whose_start_up_it_matches() {
    let _serial = SERIAL.lock().await;
    *ZYGOTE.lock().await = None;
    let zygote_pid = || async { ZYGOTE.lock().await.as_ref().map(|z| z.child.id()) };
    let dir = step_dir();
    // A base that would make an interpreter load a path of its choosing starts nothing.
    let loads = BTreeMap::from([("PYTHONPATH".to_string(), "/tmp".to_string())]);
    assert!(!prewarm(&python(), &loads, StepUsers::Same).await);
    assert_eq!(zygote_pid().await, None);

    let base = BTreeMap::from([
        ("PATH".to_string(), "/usr/bin:/bin".to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ]);
    assert!(prewarm(&python(), &base, StepUsers::Same).await);
    let ahead = zygote_pid().await.expect("a zygote started ahead");
    // Asked again, it keeps the one it has.
    assert!(prewarm(&python(), &base, StepUsers::Same).await);
    assert_eq!(zygote_pid().await, Some(ahead));

    // A step of that base (plus its own variables) is forked from it.
    let mut step = spec("print('hi')", dir.path(), Duration::from_secs(20));
    step.env.insert("LANG".into(), "C.UTF-8".into());
    let (ending, lines) = collect(step.clone(), true).await;
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(lines, vec![(Stream::Stdout, "hi".to_string())]);
    assert_eq!(
        zygote_pid().await,
        Some(ahead),
        "the step used the zygote started ahead"
    );

    // One whose locale differs gets a zygote of its own, as it would without one ahead.
    step.env.insert("LANG".into(), "C".into());
    let (ending, lines) = collect(step, true).await;
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(lines, vec![(Stream::Stdout, "hi".to_string())]);
    let replaced = zygote_pid().await.expect("a zygote");
    assert_ne!(replaced, ahead);
}

/// The zygote's descriptors 3 and 4 outlive its `exec` wherever they were: moved there
/// without close-on-exec, or, already there, with the flag cleared.
#[test]
fn a_descriptor_is_placed_open_across_exec_even_where_it_already_is() {
    use std::os::fd::{AsRawFd, FromRawFd};
    let close_on_exec = |fd| {
        let flags = nix::fcntl::fcntl(
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .unwrap();
        nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
    };
    let dir = std::fs::File::open("/").unwrap();
    let fd = dir.as_raw_fd();
    assert!(close_on_exec(fd), "std opens with close-on-exec");
    let elsewhere = fd + 100;
    assert!(place_fd(fd, elsewhere));
    assert!(!close_on_exec(elsewhere));
    drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(elsewhere) });
    assert!(place_fd(fd, fd));
    assert!(!close_on_exec(fd));
    assert!(!place_fd(-1, elsewhere), "a failed duplicate is a failure");
}
