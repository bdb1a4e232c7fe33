//! Nothing outlives its step, attacked end to end: a `bash` step under `plue run` starts
//! `sleep 30`s that escape in every way a process can — a double fork into a new session,
//! a new process group (`set -m`, `setsid -f`), a cleared environment, `nohup` — records
//! their pids, and succeeds. The moment `plue run` has returned, none of them may run.
//!
//! A step is a closed room (issue 30): what one step leaves in the host's shared places
//! (a set-uid `bash` in `/tmp`, files in `/var/tmp` and `/dev/shm`, a SysV segment) is
//! found by no later step and is not on the host; every step process has `no_new_privs`.

use crate::support;
use std::os::unix::fs::PermissionsExt;

/// The attacking step: five escapees, each recording its pid in `$0`'s file and becoming
/// a `sleep 30`; the step waits (bounded) until all five have recorded themselves.
const ESCAPES: &str = r#"
P=PIDS_FILE
E='echo $$ >> "$0"; exec sleep 30'
(setsid bash -c "$E" "$P" >/dev/null 2>&1 &)
set -m
bash -c "$E" "$P" >/dev/null 2>&1 &
set +m
setsid -f bash -c "$E" "$P" >/dev/null 2>&1
(env -i /bin/bash -c "$E" "$P" >/dev/null 2>&1 &)
nohup bash -c "$E" "$P" >/dev/null 2>&1 &
grep '^0::' /proc/self/cgroup > "$P.cgroup"
for i in $(seq 1000); do
    [ "$(wc -l < "$P")" -ge 5 ] && { echo escaped; exit 0; }
    sleep 0.01
done
echo "the escapees did not start" >&2
exit 1
"#;

#[test]
fn setsid_new_group_cleared_env_and_nohup_escapes_die_with_their_step() {
    let dir = tempfile::tempdir().unwrap();
    // A root runner runs the step as an unprivileged user, which must write the pid file.
    let drop = dir.path().join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&drop, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pids_file = drop.join("pids");
    std::fs::write(&pids_file, "").unwrap();
    std::fs::set_permissions(&pids_file, std::fs::Permissions::from_mode(0o666)).unwrap();

    let script = ESCAPES.replace("PIDS_FILE", &pids_file.display().to_string());
    let workflow = format!(
        "SCRIPT = r'''{script}'''\n\n\
         def workflow():\n    \
             return Plan(name='t', triggers=[Trigger.manual()], steps=[Step.bash('escape', SCRIPT)])\n"
    );
    let output = support::plue_run_one(dir.path(), &workflow)
        // The runner's work directory (and so the one entry of /tmp a root runner's step
        // still sees: the rest of its /tmp is its own) holds the drop box.
        .env("TMPDIR", dir.path())
        .output()
        .expect("plue runs");
    // Read /proc before anything else: the escapees must already be gone.
    let pids: Vec<i32> = std::fs::read_to_string(&pids_file)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let alive: Vec<i32> = pids.iter().copied().filter(|&p| is_sleep_30(p)).collect();
    for pid in &alive {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("escaped"), "{stdout}");
    assert_eq!(pids.len(), 5, "every escapee started: {pids:?}");
    assert!(alive.is_empty(), "escapees outlived their step: {alive:?}");
    let cgroup = std::fs::read_to_string(drop.join("pids.cgroup")).unwrap_or_default();
    eprintln!("the step ran in cgroup {}", cgroup.trim());
}

/// The first step plants in every shared place; the later ones (a `bash` and a warm
/// `python` step, on the same single runner, so often the same uid) report what they find
/// there, and their own `no_new_privs`.
const HARVEST: &str = r#"
def workflow():
    plant = Step.bash("plant", """
        set -e
        cp /bin/bash "/tmp/$HARVEST_TAG-bash"; chmod 4755 "/tmp/$HARVEST_TAG-bash"
        for place in /tmp /var/tmp /dev/shm /run/lock; do
            if [ -d "$place" ]; then echo planted > "$place/$HARVEST_TAG"; fi
        done
        ipcmk -M 4096 -p 0666 >/dev/null
        echo "planted"
    """)
    look = Step.bash("look", """
        n=$(for place in /tmp /var/tmp /dev/shm /run/lock; do
            ls -a "$place" 2>/dev/null
        done | grep -cF "$HARVEST_TAG" || true)
        echo "bash found $n files, $(tail -n +2 /proc/sysvipc/shm | wc -l) segments"
        grep '^NoNewPrivs:' /proc/self/status | tr -s '[:blank:]' ' ' | sed 's/^/bash /'
    """, depends_on=["plant"])
    py = Step.python("look-py", "\n".join([
        "import os",
        "tag = os.environ['HARVEST_TAG']",
        "found = [n for p in ('/tmp', '/var/tmp', '/dev/shm', '/run/lock') if os.path.isdir(p) for n in os.listdir(p) if tag in n]",
        "segments = open('/proc/sysvipc/shm').read().splitlines()[1:]",
        "print('python found %d files, %d segments' % (len(found), len(segments)))",
        "print('python ' + [l for l in open('/proc/self/status') if l.startswith('NoNewPrivs:')][0].replace(chr(9), ' ').strip())",
    ]), depends_on=["look"])
    return Plan(name="harvest", triggers=[Trigger.manual()], steps=[plant, look, py])
"#;

/// The harvest of issue 30, end to end: nothing a step left in `/tmp`, `/var/tmp`,
/// `/dev/shm`, `/run/lock` or SysV IPC reaches a later step or stays on the host.
#[test]
fn a_step_finds_nothing_an_earlier_step_left_in_shared_places() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tag = format!("plue-e2e-harvest-{}", std::process::id());
    let output = support::plue_run_one(dir.path(), HARVEST)
        .env("HARVEST_TAG", &tag)
        .output()
        .expect("plue runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let on_host: Vec<String> = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"]
        .iter()
        .flat_map(|place| [format!("{place}/{tag}"), format!("{place}/{tag}-bash")])
        .filter(|path| std::path::Path::new(path).exists())
        .collect();
    for path in &on_host {
        let _ = std::fs::remove_file(path);
    }
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("planted"), "{stdout}");
    for line in ["NoNewPrivs: 1", "found 0 files"] {
        for step in ["bash", "python"] {
            assert!(
                stdout.contains(&format!("{step} {line}")),
                "{step} {line}: {stdout}"
            );
        }
    }
    if nix::unistd::geteuid().is_root() {
        // Only a root runner gives steps their own places and IPC.
        assert!(on_host.is_empty(), "left on the host: {on_host:?}");
        for step in ["bash", "python"] {
            assert!(
                stdout.contains(&format!("{step} found 0 files, 0 segments")),
                "{stdout}"
            );
        }
        let host = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
        let of_steps: Vec<&str> = host
            .lines()
            .skip(1)
            .filter(|line| {
                line.split_whitespace()
                    .nth(7)
                    .and_then(|uid| uid.parse::<u32>().ok())
                    .is_some_and(|uid| (3_000_000..=3_065_535).contains(&uid))
            })
            .collect();
        assert!(
            of_steps.is_empty(),
            "step segments on the host: {of_steps:?}"
        );
    }
}

/// Whether `pid` is a live (not zombie) `sleep 30`.
fn is_sleep_30(pid: i32) -> bool {
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat[stat.rfind(')').unwrap() + 1..]
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    alive && cmdline == b"sleep\x0030\x00"
}

/// Kernel keyrings are per uid and not namespaced: a step that stores a key in its user
/// keyring (`@u`) would leave it for the next holder of the uid. A `bash` step tries to
/// store one, a later warm `python` step tries to find it; both are refused with EPERM
/// (the step seccomp filter), so there is nothing to find.
const KEYRING: &str = r#"
def workflow():
    probe = "\n".join([
        "import ctypes, os, platform",
        "nr = {'x86_64': (248, 250), 'aarch64': (217, 219)}[platform.machine()]",
        "libc = ctypes.CDLL(None, use_errno=True)",
        "libc.syscall.restype = ctypes.c_long",
        "L = ctypes.c_long",
        "r = libc.syscall(L(nr[0]), b'user', b'plue-e2e-key', b'DEPLOY_KEY=s3cr3t', ctypes.c_size_t(17), L(-4))",
        "print(os.environ['WHO'], 'add_key', r, ctypes.get_errno())",
        "r = libc.syscall(L(nr[1]), L(10), L(-4), b'user', b'plue-e2e-key', L(0))",
        "print(os.environ['WHO'], 'keyctl', r, ctypes.get_errno())",
    ])
    store = Step.bash("store", 'WHO=bash /usr/bin/python3 -c "$PROBE"', env={"PROBE": probe})
    find = Step.python("find", "import os\nos.environ['WHO'] = 'python'\n" + probe,
                       depends_on=["store"])
    return Plan(name="keyring", triggers=[Trigger.manual()], steps=[store, find])
"#;

#[test]
fn no_step_can_store_a_kernel_key_for_the_next_holder_of_its_uid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = support::plue_run_one(dir.path(), KEYRING)
        .output()
        .expect("plue runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let eperm = libc::EPERM;
    for step in ["bash", "python"] {
        for call in ["add_key", "keyctl"] {
            assert!(
                stdout.contains(&format!("{step} {call} -1 {eperm}")),
                "{step} {call}: {stdout}"
            );
        }
    }
}
