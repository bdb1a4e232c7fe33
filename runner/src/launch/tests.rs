//! Why one file past ~600 lines: the launch path's tests share one runner fixture.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;

fn bash() -> PathBuf {
    ["/usr/bin/bash", "/bin/bash"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("bash is installed")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `bash -c script args...` in `cwd` with `env`; returns stdout, stderr and the exit.
fn run(script: &str, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> (String, String, Exit) {
    run_as(script, args, env, cwd, None)
}

/// [`run`] as `user` (a root runner's confined launch) when one is given.
fn run_as(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
    cwd: &Path,
    user: Option<StepUser>,
) -> (String, String, Exit) {
    let program = bash();
    let mut all = vec!["-c".to_owned(), script.to_owned()];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    let mut child = launch(&Launch {
        program: &program,
        args: &all,
        env: env.to_vec(),
        cwd,
        cgroup: None,
        user,
        places: Places::Own,
        network: None,
    })
    .unwrap();
    let read = |fd: Option<OwnedFd>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(fd.unwrap()), &mut text)
                .unwrap();
            text
        })
    };
    let (stdout, stderr) = (read(child.stdout.take()), read(child.stderr.take()));
    let exit = runtime().block_on(child.wait()).unwrap();
    (stdout.join().unwrap(), stderr.join().unwrap(), exit)
}

#[test]
fn the_child_gets_exactly_its_arguments_environment_directory_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
        printf '%s|%s|%s|%s\n' "$0" "$1" "$2" "$PWD"
        printf 'env:%s\n' "$(env | LC_ALL=C sort | tr '\n' ' ')"
        echo "to stderr" >&2
    "#;
    let (stdout, stderr, exit) = run(
        script,
        &["zero", "a b", ""],
        &[("PATH", "/usr/bin:/bin"), ("SPACED", "1 2"), ("EMPTY", "")],
        dir.path(),
    );
    assert_eq!(exit, Exit::Code(0), "{stderr}");
    let mut lines = stdout.lines();
    let real = dir.path().canonicalize().unwrap();
    assert_eq!(
        lines.next().unwrap(),
        format!("zero|a b||{}", real.display())
    );
    // Bash adds PWD, SHLVL and `_` of its own; nothing of the runner's arrives.
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "env:EMPTY= PATH=/usr/bin:/bin PWD={} SHLVL=1 SPACED=1 2 _=/usr/bin/env ",
            real.display()
        )
    );
    assert_eq!(stderr, "to stderr\n");
}

#[test]
fn the_child_starts_clean_in_its_own_session_with_only_stdio_open() {
    let dir = tempfile::tempdir().unwrap();
    let child = launch(&Launch {
        program: Path::new("sleep"),
        args: &["1236.5".to_owned()],
        env: vec![("PATH", "/nonexistent::/usr/bin:/bin")],
        cwd: dir.path(),
        cgroup: None,
        user: None,
        places: Places::Own,
        network: None,
    })
    .unwrap();
    let pid = child.pid();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(after_name[3], pid.to_string(), "its own session: {stat}");
    // `launch` returns once the child has exec'd, but `sleep`'s dynamic loader may still
    // hold a library open for a moment (fd 3): wait until start-up is over. An inherited
    // descriptor never closes, so one would still be there after the wait.
    let stdio = BTreeSet::from(["0", "1", "2"].map(String::from));
    let open_fds = || -> BTreeSet<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut fds = open_fds();
    while fds != stdio && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        fds = open_fds();
    }
    assert_eq!(fds, stdio);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap(),
        Path::new("/dev/null")
    );
    let signals = |pid: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
        };
        (field("SigBlk:"), field("SigIgn:"))
    };
    let (blocked, ignored) = signals(&pid.to_string());
    assert_eq!(blocked, 0, "no signal blocked");
    // Nothing ignored, whatever the runner ignores: SIGPIPE (every Rust program ignores
    // it), SIGINT and SIGQUIT (a background job's, as `cargo test &` runs).
    let sigpipe = 1 << (libc::SIGPIPE - 1);
    let (_, ours) = signals("self");
    assert_ne!(ours & sigpipe, 0, "the test itself ignores SIGPIPE");
    assert_eq!(ignored, 0);
}

#[test]
fn exit_codes_and_signals_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run("exit 3", &[], &[], dir.path()).2, Exit::Code(3));
    assert_eq!(
        run("kill -TERM $$", &[], &[], dir.path()).2,
        Exit::Signal(15)
    );
}

#[test]
fn a_start_that_fails_names_its_stage() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let start = |program: &Path, cwd: &Path| {
        launch(&Launch {
            program,
            args: &[],
            env: Vec::new(),
            cwd,
            cgroup: None,
            user: None,
            places: Places::Own,
            network: None,
        })
        .unwrap_err()
    };
    let err = start(&missing, dir.path());
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err.to_string().contains(": executing: "), "{err}");
    let err = start(&bash(), &missing);
    assert!(
        err.to_string().contains("entering the working directory"),
        "{err}"
    );
    // The report travels on a pipe, so a child with a copy of the memory reports as well.
    let copied = launch_sharing(
        &Launch {
            program: &missing,
            args: &[],
            env: Vec::new(),
            cwd: dir.path(),
            cgroup: None,
            user: None,
            places: Places::Own,
            network: None,
        },
        false,
        Stdio::Pipes,
    )
    .unwrap_err();
    assert!(copied.to_string().contains(": executing: "), "{copied}");
    let env_with_nul = launch(&Launch {
        program: &bash(),
        args: &[],
        env: vec![("A", "x\0y")],
        cwd: dir.path(),
        cgroup: None,
        user: None,
        places: Places::Own,
        network: None,
    })
    .unwrap_err();
    assert_eq!(env_with_nul.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn a_child_dropped_unreaped_is_killed_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let child = launch(&Launch {
        program: &bash(),
        args: &["-c".to_owned(), "sleep 1234.5".to_owned()],
        env: Vec::new(),
        cwd: dir.path(),
        cgroup: None,
        user: None,
        places: Places::Own,
        network: None,
    })
    .unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", child.pid()));
    assert!(proc_dir.exists());
    drop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_dir.exists() {
        assert!(Instant::now() < deadline, "the dropped child was reaped");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_child_is_born_into_its_cgroup() {
    let Some(cgroup) = crate::containment::StepCgroup::create(crate::containment::Mode::Auto)
    else {
        return; // No writable cgroup v2 here (containment's tests say which hosts have one).
    };
    let dir = tempfile::tempdir().unwrap();
    let child = launch(&Launch {
        program: Path::new("sleep"),
        args: &["1235.5".to_owned()],
        env: vec![("PATH", "/usr/bin:/bin")],
        cwd: dir.path(),
        cgroup: Some(cgroup.target()),
        user: None,
        places: Places::Own,
        network: None,
    })
    .unwrap();
    assert!(cgroup.holds(child.pid()));
    // x86-64 kernels since 5.7 take `clone3(CLONE_INTO_CGROUP)` (the join without the
    // grace-period wait); elsewhere the child joined by writing `cgroup.procs`.
    if cfg!(target_arch = "x86_64") {
        assert!(child.born_in_cgroup());
    }
    drop(child);
    assert!(cgroup.finish(Duration::from_secs(5)));
}

#[test]
fn under_root_the_child_is_the_step_user_with_no_groups_capabilities_or_view_of_others() {
    if !nix::unistd::geteuid().is_root() {
        return; // The confinement is a root runner's.
    }
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let user = StepUser {
        uid: 3_999_001,
        gid: 3_999_001,
    };
    // Builtins only, reading the child's own /proc (mounted `hidepid=invisible`).
    let script = r#"
        while read -r key a b c d rest; do
            case $key in Uid:|Gid:|Groups:|CapPrm:|CapEff:|CapAmb:|CapBnd:) echo "$key $a $b $c $d";; esac
        done < /proc/self/status
        [ -e /proc/1/status ] && echo "sees pid 1" || echo "pid 1 hidden"
    "#;
    let program = bash();
    let args = ["-c".to_owned(), script.to_owned()];
    // Sharing the runner's memory (`fs.suid_dumpable` 0) or with a copy of it (otherwise).
    for share_memory in [true, false] {
        let mut child = launch_sharing(
            &Launch {
                program: &program,
                args: &args,
                env: vec![("PATH", "/usr/bin:/bin")],
                cwd: dir.path(),
                cgroup: None,
                user: Some(user),
                places: Places::Own,
                network: None,
            },
            share_memory,
            Stdio::Pipes,
        )
        .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(stdout), &mut text).unwrap();
            text
        });
        assert_eq!(runtime().block_on(child.wait()).unwrap(), Exit::Code(0));
        let out = reader.join().unwrap();
        assert!(
            out.contains("Uid: 3999001 3999001 3999001 3999001"),
            "{out}"
        );
        assert!(
            out.contains("Gid: 3999001 3999001 3999001 3999001"),
            "{out}"
        );
        assert!(
            out.lines().any(|l| l.trim_end() == "Groups:"),
            "no groups: {out}"
        );
        for cap in ["CapPrm:", "CapEff:", "CapAmb:"] {
            assert!(
                out.contains(&format!("{cap} 0000000000000000")),
                "{cap}: {out}"
            );
        }
        assert!(out.contains("pid 1 hidden"), "{out}");
    }
}

/// A directory every step user may write to and search, as a root runner's work
/// directory is for its own attempt; under the system temporary directory (`/tmp`), as
/// the runner's default work directory is.
fn open_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// `NoNewPrivs:` of the child's own `/proc/self/status`, with builtins only.
const NO_NEW_PRIVS: &str = r#"
    while read -r key value rest; do
        [ "$key" = NoNewPrivs: ] && echo "nnp=$value"
    done < /proc/self/status
    true
"#;

#[test]
fn every_child_has_no_new_privs() {
    let dir = open_dir();
    let (stdout, stderr, exit) = run(NO_NEW_PRIVS, &[], &[], dir.path());
    assert_eq!(exit, Exit::Code(0), "{stderr}");
    assert_eq!(stdout.trim(), "nnp=1");
    if nix::unistd::geteuid().is_root() {
        let user = StepUser {
            uid: 3_999_011,
            gid: 3_999_011,
        };
        let (stdout, stderr, _) = run_as(NO_NEW_PRIVS, &[], &[], dir.path(), Some(user));
        assert_eq!(stdout.trim(), "nnp=1", "{stderr}");
    }
}

/// The harvest of issue 30: a step of uid U leaves a set-uid `bash`, files and a SysV
/// segment in every shared place; a later step that holds U again (forced here) must find
/// none of it, and the host none of it either.
#[test]
fn a_later_step_of_the_same_uid_finds_nothing_an_earlier_one_left_in_shared_places() {
    if !nix::unistd::geteuid().is_root() {
        return; // Only a root runner gives steps their own places (see `rooms`).
    }
    let dir = open_dir();
    let user = StepUser {
        uid: 3_999_012,
        gid: 3_999_012,
    };
    let tag = format!("plue-harvest-{}", std::process::id());
    let env = [("PATH", "/usr/bin:/bin"), ("TAG", tag.as_str())];
    let plant = r#"
        set -e
        cp /bin/bash "/tmp/$TAG-bash"; chmod 4755 "/tmp/$TAG-bash"
        for place in /tmp /var/tmp /dev/shm /run/lock; do
            [ -d "$place" ] && echo planted > "$place/$TAG"
        done
        ipcmk -M 4096 -p 0666 | sed -n 's/.*: //p'
        ls -la "/tmp/$TAG-bash" >&2
    "#;
    let (planted, stderr, exit) = run_as(plant, &[], &env, dir.path(), Some(user));
    assert_eq!(exit, Exit::Code(0), "{stderr}");
    let shmid = planted.trim().to_owned();
    assert!(!shmid.is_empty(), "the segment was made: {stderr}");
    let look = r#"
        for place in /tmp /var/tmp /dev/shm /run/lock; do
            ls -a "$place" 2>/dev/null | grep -F "$TAG" | sed "s|^|$place/|"
        done
        ipcs -m | awk 'NR > 3 && $2 != "" { print "segment " $2 }'
        true
    "#;
    let (found, stderr, exit) = run_as(look, &[], &env, dir.path(), Some(user));
    assert_eq!(exit, Exit::Code(0), "{stderr}");
    assert_eq!(
        found.trim(),
        "",
        "the later step found the earlier one's leftovers"
    );
    // Nor did anything reach the host's places or its IPC namespace.
    for place in ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"] {
        for name in [tag.clone(), format!("{tag}-bash")] {
            let path = Path::new(place).join(name);
            assert!(!path.exists(), "{} is on the host", path.display());
        }
    }
    let host_segments = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let owned_by_step = host_segments
        .lines()
        .skip(1)
        .filter(|line| line.split_whitespace().nth(7) == Some(&user.uid.to_string()))
        .count();
    assert_eq!(
        owned_by_step, 0,
        "a segment of the step is on the host: {host_segments}"
    );
}

/// Not even a set-uid file of another user placed in the workspace changes the step's uid
/// (its mount is `nosuid`, and the step has `no_new_privs`), and the kept work directory
/// is still where the runner put it.
#[test]
fn a_set_uid_file_of_another_user_in_the_workspace_runs_as_the_step_user() {
    if !nix::unistd::geteuid().is_root() {
        return; // Only a root runner runs steps as other users.
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = open_dir();
    let planted = dir.path().join("suid-bash");
    std::fs::copy(bash(), &planted).unwrap();
    std::os::unix::fs::chown(&planted, Some(3_999_014), Some(3_999_014)).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let user = StepUser {
        uid: 3_999_013,
        gid: 3_999_013,
    };
    let script = r#"./suid-bash -p -c 'echo "euid=$(id -u) ruid=$(id -ru)"'; echo "pwd=$PWD""#;
    let (stdout, stderr, exit) = run_as(
        script,
        &[],
        &[("PATH", "/usr/bin:/bin")],
        dir.path(),
        Some(user),
    );
    assert_eq!(exit, Exit::Code(0), "{stderr}");
    assert!(
        stdout.contains("euid=3999013 ruid=3999013"),
        "{stdout}{stderr}"
    );
    let real = dir.path().canonicalize().unwrap();
    assert!(
        stdout.contains(&format!("pwd={}", real.display())),
        "{stdout}"
    );
}

/// Each step's places are its own tmpfs, `nosuid,nodev`, and the kept directory is bound
/// `nosuid,nodev` too.
#[test]
fn a_confined_step_s_places_are_private_nosuid_tmpfs() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = open_dir();
    let user = StepUser {
        uid: 3_999_015,
        gid: 3_999_015,
    };
    let script = r#"
        while read -r _ _ _ _ point options _ fstype _; do
            case $point in /tmp|/var/tmp|/dev/shm|"$PWD") echo "$point $fstype $options";; esac
        done < /proc/self/mountinfo
        true
    "#;
    let (stdout, stderr, exit) = run_as(
        script,
        &[],
        &[("PATH", "/usr/bin:/bin")],
        dir.path(),
        Some(user),
    );
    assert_eq!(exit, Exit::Code(0), "{stderr}");
    for place in rooms::shared_places() {
        if !["/tmp", "/var/tmp", "/dev/shm"].contains(&place.to_str().unwrap()) {
            continue;
        }
        // The last mount on a point is the one seen there (`/dev/shm` may be stacked).
        let line = stdout
            .lines()
            .rev()
            .find(|line| line.starts_with(&format!("{} ", place.display())))
            .unwrap_or_else(|| panic!("{} is not mounted: {stdout}", place.display()));
        assert!(line.contains(" tmpfs "), "{line}");
        assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
    }
    let real = dir.path().canonicalize().unwrap();
    let kept = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with(&format!("{} ", real.display())))
        .unwrap_or_else(|| panic!("the working directory is not bound: {stdout}"));
    assert!(kept.contains("nosuid") && kept.contains("nodev"), "{kept}");
}

/// A host that refuses the namespaces (a container without `CAP_SYS_ADMIN`; here the
/// capability dropped from the launching thread's effective set): the step still runs as
/// its user with `no_new_privs`, on the host's places, and the runner records it (so step
/// users are swept) instead of failing.
#[test]
fn a_host_refusing_namespaces_runs_the_step_as_before_and_says_so() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = open_dir();
    let user = StepUser {
        uid: 3_999_016,
        gid: 3_999_016,
    };
    let path = dir.path().to_owned();
    // Capabilities are per thread: only this one loses CAP_SYS_ADMIN.
    let (stdout, stderr, exit) = std::thread::spawn(move || {
        drop_effective_capability(21); // CAP_SYS_ADMIN
        let script = format!(
            "{NO_NEW_PRIVS}\necho uid=$(id -u)\n[ -e /proc/1/status ] && echo sees-pid-1; true"
        );
        run_as(
            &script,
            &[],
            &[("PATH", "/usr/bin:/bin")],
            &path,
            Some(user),
        )
    })
    .join()
    .unwrap();
    assert_eq!(exit, Exit::Code(0), "{stderr}");
    assert!(stdout.contains("nnp=1"), "{stdout}");
    assert!(stdout.contains("uid=3999016"), "{stdout}");
    assert!(
        stdout.contains("sees-pid-1"),
        "the host's /proc, as before: {stdout}"
    );
    assert!(
        rooms::maybe_shared(),
        "the runner knows its steps share the host's places"
    );
}

/// Clears `capability` from this thread's effective set (it stays permitted).
fn drop_effective_capability(capability: u32) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset on valid, correctly sized structures, for this thread only.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[(capability / 32) as usize].effective &= !(1 << (capability % 32));
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}

/// The attacker's keyring: a step stores a key in its user keyring (`@u`), which is per
/// uid and outlives it, for the next holder of the uid to read. Every keyring call fails
/// with EPERM (the step's seccomp filter), so nothing is stored and nothing can be read.
pub(crate) const KEYRING_PROBE: &str = r#"
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
add_key, keyctl = int(sys.argv[1]), int(sys.argv[2])
# add_key("user", "plue-probe", "secret", 6, KEY_SPEC_USER_KEYRING)
r = libc.syscall(ctypes.c_long(add_key), b"user", b"plue-probe", b"secret",
                 ctypes.c_size_t(6), ctypes.c_long(-4))
print("add_key", r, ctypes.get_errno())
# keyctl(KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", "plue-probe", 0)
r = libc.syscall(ctypes.c_long(keyctl), ctypes.c_long(10), ctypes.c_long(-4), b"user",
                 b"plue-probe", ctypes.c_long(0))
print("keyctl", r, ctypes.get_errno())
"#;

#[test]
fn a_step_can_neither_store_nor_read_a_kernel_key() {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let user = nix::unistd::geteuid().is_root().then_some(StepUser {
        uid: 3_999_032,
        gid: 3_999_032,
    });
    let (add_key, keyctl) = (libc::SYS_add_key.to_string(), libc::SYS_keyctl.to_string());
    let (stdout, stderr, exit) = run_as(
        r#"exec /usr/bin/python3 -c "$0" "$@""#,
        &[KEYRING_PROBE, &add_key, &keyctl],
        &[("PATH", "/usr/bin:/bin")],
        dir.path(),
        user,
    );
    assert_eq!(exit, Exit::Code(0), "{stdout}{stderr}");
    let eperm = libc::EPERM.to_string();
    assert!(
        stdout.contains(&format!("add_key -1 {eperm}")),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("keyctl -1 {eperm}")),
        "{stdout}{stderr}"
    );
}
