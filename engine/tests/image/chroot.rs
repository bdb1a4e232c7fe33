//! The Dockerfile's last stage assembled without a container engine, and `plue` run in it.
//!
//! The root file system is what the stage's `FROM debian:<release>-slim` plus its
//! `apt-get install` would give: `mmdebstrap --variant=minbase` (how Debian's official
//! images are made) of the same release from Debian's archive, with exactly the packages the
//! stage's `apt-get install` names, read from the Dockerfile. The stage's other `RUN`
//! commands (the user, group and directories) then run inside it verbatim, the binary cargo
//! built for this test goes where the stage's `COPY` puts the release binary, and `plue` runs
//! through the stage's `ENTRYPOINT`, with its `ENV`, `USER` and `WORKDIR`, in a chroot inside
//! fresh mount and PID namespaces (`unshare`).
//!
//! Invariants: the package list is never kept here by hand; every mount is made inside the
//! private mount namespace, so it dies with the namespace, and the guard still unmounts
//! anything left under the root and refuses to delete a root that holds a mount. The
//! assembled root file system is cached under `target/image-chroot/` keyed by a hash of
//! the release, the archive and the package list, so only the first run downloads.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{dockerfile, installed, instruction, Stage};

/// Set (CI does) to fail instead of skipping when this machine cannot assemble the chroot.
const REQUIRE: &str = "PLUE_REQUIRE_IMAGE_CHROOT";

/// The archive `debian:<release>-slim` installs from (its `/etc/apt/sources.list.d`).
fn sources(release: &str) -> Vec<String> {
    vec![
        format!("deb http://deb.debian.org/debian {release} main"),
        format!("deb http://deb.debian.org/debian {release}-updates main"),
        format!("deb http://deb.debian.org/debian-security {release}-security main"),
    ]
}

/// Docker's `PATH` for a Linux container whose image sets none.
const DOCKER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn target_dir() -> PathBuf {
    // CARGO_BIN_EXE_plue is <target>/<profile>/plue.
    Path::new(env!("CARGO_BIN_EXE_plue"))
        .ancestors()
        .nth(2)
        .expect("the target directory")
        .join("image-chroot")
}

/// Why this machine cannot assemble the chroot, if it cannot.
fn unable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("it needs root (mmdebstrap, chroot and unshare)".into());
    }
    let found = Command::new("mmdebstrap")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        return Some("mmdebstrap is not installed (apt-get install mmdebstrap)".into());
    }
    None
}

/// The tarball of the stage's root file system after its `apt-get install`, built once.
fn root_tarball(release: &str, packages: &[String]) -> PathBuf {
    let sources = sources(release);
    let mut key = Sha256::new();
    for part in [
        "minbase",
        "APT::Install-Recommends false",
        release,
        &sources.join("\n"),
        &packages.join(","),
    ] {
        key.update(part.as_bytes());
        key.update([0]);
    }
    let dir = target_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let tarball = dir.join(format!(
        "{release}-{}.tar",
        &hex::encode(key.finalize())[..16]
    ));
    if tarball.exists() {
        return tarball;
    }
    let partial = dir.join(format!("partial-{}.tar", std::process::id()));
    let started = Instant::now();
    // A mirror's answer can fail for a moment (a 5xx, a reset, a Release file being
    // replaced): try a few times, and keep every attempt's reason for the failure message.
    let mut failures = Vec::new();
    for attempt in 1..=3 {
        let output = Command::new("mmdebstrap")
            .args(["--mode=root", "--variant=minbase", "--format=tar"])
            // The Dockerfile installs with --no-install-recommends.
            .arg("--aptopt=APT::Install-Recommends \"false\"")
            // Archives reached through a mirror or a snapshot can serve a Release file past
            // its Valid-Until (this machine's own apt is set the same way); signatures are
            // still checked against Debian's keyring.
            .arg("--aptopt=Acquire::Check-Valid-Until \"false\"")
            .arg("--aptopt=Acquire::Check-Date \"false\"")
            .arg("--aptopt=Acquire::Retries \"3\"")
            .arg(format!("--include={}", packages.join(",")))
            .arg(release)
            .arg(&partial)
            .args(&sources)
            .output()
            .expect("mmdebstrap starts");
        if output.status.success() {
            failures.clear();
            break;
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The lines that say why, not the whole progress log.
        let why: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("E:") || l.starts_with("W:") || l.contains("Err:"))
            .collect();
        failures.push(format!("attempt {attempt}: {}", why.join("\n")));
        let _ = std::fs::remove_file(&partial);
        if attempt < 3 {
            std::thread::sleep(Duration::from_secs(5 * attempt));
        }
    }
    assert!(
        failures.is_empty(),
        "mmdebstrap of {release} with {packages:?} failed:\n{}",
        failures.join("\n")
    );
    std::fs::rename(&partial, &tarball).unwrap();
    // One root file system per release is kept: an older package list's is stale.
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name.starts_with(&format!("{release}-")) && name.ends_with(".tar");
        if stale && entry.path() != tarball {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    eprintln!(
        "built {} in {:.0?} (cached for the next run)",
        tarball.display(),
        started.elapsed()
    );
    tarball
}

/// The mount points under `root` in this process's mount namespace, deepest first.
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(root))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// An extracted root file system, unmounted and removed however the test ends.
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        for mount in mounts_under(&self.0) {
            let _ = Command::new("umount").arg("--lazy").arg(&mount).status();
        }
        let left = mounts_under(&self.0);
        if left.is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            // Never delete through a mount (a bound /dev would lose the host's nodes).
            eprintln!(
                "left {} in place: still mounted there: {left:?}",
                self.0.display()
            );
        }
    }
}

fn extract(tarball: &Path) -> Root {
    // What a killed run left: its root (unmounted first) and a half-written tarball.
    for entry in std::fs::read_dir(target_dir()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("root-").or_else(|| {
            name.strip_prefix("partial-")
                .and_then(|n| n.strip_suffix(".tar"))
        }) else {
            continue;
        };
        if pid == std::process::id().to_string() || !Path::new("/proc").join(pid).exists() {
            if name.starts_with("root-") {
                drop(Root(entry.path()));
            } else {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let dir = target_dir().join(format!("root-{}", std::process::id()));
    let root = Root(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("tar")
        .args(["--extract", "--same-owner", "--same-permissions", "--file"])
        .arg(tarball)
        .arg("--directory")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "tar could not extract {}",
        tarball.display()
    );
    root
}

/// Runs `script` (the Dockerfile's own shell text) as root inside the chroot.
fn sh_in(root: &Path, script: &str) {
    let output = Command::new("chroot")
        .arg(root)
        .args(["/bin/sh", "-ec", script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "`{script}` failed in the image's root: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// How the container would run: the stage's user, environment and working directory.
struct Container {
    root: PathBuf,
    user: Option<String>,
    env: Vec<(String, String)>,
    workdir: String,
    entrypoint: Vec<String>,
}

struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Container {
    /// `ENTRYPOINT args`, in fresh mount and PID namespaces with their own /proc and, as
    /// Docker gives every container, a tmpfs at /dev/shm (mounted in the private namespace,
    /// so gone with it).
    fn run(&self, args: &[&str], timeout: Duration) -> Ran {
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation=private", "--pid", "--fork"])
            .arg("--kill-child")
            .arg(format!("--mount-proc={}", self.root.join("proc").display()))
            .args(["/bin/sh", "-ec"])
            .arg(
                "mount -t tmpfs -o mode=1777,nosuid,nodev shm \"$1/dev/shm\"; \
                 shift; exec chroot \"$@\"",
            )
            .arg("sh")
            .arg(&self.root);
        if let Some(user) = &self.user {
            command.arg(format!("--userspec={user}"));
        }
        command
            .arg(&self.root)
            .args(["/usr/bin/env", "-i", "--chdir", &self.workdir])
            .arg(format!("PATH={DOCKER_PATH}"))
            .args(self.env.iter().map(|(k, v)| format!("{k}={v}")))
            .arg("NO_COLOR=1")
            .args(&self.entrypoint)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("unshare starts");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                // --kill-child: the namespace's first process, and so all of it, dies too.
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "plue {args:?} did not finish in {timeout:?} in the image's root: {}",
                    err.join().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ran {
            success: status.success(),
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    }
}

fn shown(args: &[&str], ran: &Ran) -> String {
    format!(
        "plue {args:?} in the image's root:\n--- stdout\n{}--- stderr\n{}",
        ran.stdout, ran.stderr
    )
}

/// Assembles the root as the stage would, with the binary where the stage copies it.
fn assemble(stages: &[Stage], release: &str) -> (Root, Container) {
    let last = stages.last().unwrap();
    assert_eq!(last.from, format!("debian:{release}-slim"));
    let packages: Vec<String> = installed(last).into_iter().collect();
    assert!(!packages.is_empty(), "the stage installs nothing?");
    let tarball = root_tarball(release, &packages);
    let started = Instant::now();
    let root = extract(&tarball);
    // The stage's RUN commands; apt-get's part is what mmdebstrap did.
    for run in instruction(last, "RUN") {
        for command in run.split("&&").map(str::trim) {
            if !command.starts_with("apt-get ") {
                sh_in(&root.0, command);
            }
        }
    }
    // COPY --from=build <what the build stage installed> <destination>.
    let build_runs = instruction(&stages[0], "RUN").join(" ");
    let copies = instruction(last, "COPY");
    assert!(!copies.is_empty(), "the stage copies no binary");
    for copy in copies {
        let words: Vec<&str> = copy.split_whitespace().collect();
        let [from, source, destination] = words[..] else {
            panic!("COPY {copy}: expected `--from=build <source> <destination>`");
        };
        assert_eq!(from, "--from=build", "{copy}");
        assert!(
            build_runs.contains(&format!("target/release/plue {source}")),
            "the build stage does not put the release binary at {source}: {build_runs}"
        );
        let inside = root.0.join(destination.trim_start_matches('/'));
        std::fs::copy(env!("CARGO_BIN_EXE_plue"), &inside).unwrap();
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut env = Vec::new();
    for line in instruction(last, "ENV") {
        for pair in line.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("ENV KEY=value");
            env.push((k.to_string(), v.to_string()));
        }
    }
    let entrypoint: Vec<String> =
        serde_json::from_str(&instruction(last, "ENTRYPOINT")[0]).expect("ENTRYPOINT in exec form");
    let container = Container {
        root: root.0.clone(),
        user: instruction(last, "USER").pop(),
        env,
        workdir: instruction(last, "WORKDIR")
            .pop()
            .unwrap_or_else(|| "/".into()),
        entrypoint,
    };
    eprintln!("assembled the image's root in {:.1?}", started.elapsed());
    (root, container)
}

/// The shared libraries an ELF binary names (`readelf -d`'s NEEDED entries).
fn needed(binary: &Path) -> Option<Vec<String>> {
    let output = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let libraries = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .map(String::from)
        .collect();
    output.status.success().then_some(libraries)
}

#[test]
fn plue_starts_and_runs_a_step_in_the_runtime_stage_assembled_from_debian() {
    if let Some(why) = unable() {
        assert!(
            std::env::var_os(REQUIRE).is_none(),
            "{REQUIRE} is set but the image's root cannot be assembled here: {why}"
        );
        eprintln!("SKIPPED: the image chroot check: {why} (set {REQUIRE}=1 to fail instead)");
        return;
    }
    // The image holds the release binary; this test runs the one cargo built for it. Both
    // link the same libraries (when a release build is at hand, that is checked here).
    let test_binary = Path::new(env!("CARGO_BIN_EXE_plue"));
    let release_binary = test_binary.ancestors().nth(2).unwrap().join("release/plue");
    if release_binary.exists() {
        if let (Some(test), Some(release)) = (needed(test_binary), needed(&release_binary)) {
            assert_eq!(
                test,
                release,
                "{} links other libraries than the binary under test (rebuild it?)",
                release_binary.display()
            );
        }
    }
    let (stages, args) = dockerfile();
    let (root, container) = assemble(&stages, &args["DEBIAN_RELEASE"]);

    let version = container.run(&["--version"], Duration::from_secs(30));
    assert!(version.success, "{}", shown(&["--version"], &version));
    assert_eq!(
        version.stdout.trim(),
        format!("plue {}", env!("CARGO_PKG_VERSION"))
    );
    eprintln!("{}", shown(&["--version"], &version));

    let help = container.run(&["runner", "--help"], Duration::from_secs(30));
    assert!(help.success, "{}", shown(&["runner", "--help"], &help));
    assert!(
        help.stdout.contains("Usage: plue runner"),
        "{}",
        help.stdout
    );

    // One local step of each kind, as the stage's user in its working directory: bash (with
    // git) and python (python3, and the CA bundle its ssl module loads). The workflow file
    // itself is evaluated by the embedded CPython: libpython and its standard library.
    let workflow = "def workflow():\n    return Plan(name='image', triggers=[Trigger.manual()], steps=[\n        \
        Step.bash('shell', 'echo \"bash $BASH_VERSION as $(id -u):$(id -g) in $PWD\"; git --version'),\n        \
        Step.python('py', 'import ssl, sys, os\\nprint(\"python\", sys.version.split()[0], \"uid\", os.getuid(), \"CAs\", ssl.create_default_context().cert_store_stats()[\"x509_ca\"])', depends_on=['shell']),\n    ])\n";
    let home = root.0.join(container.workdir.trim_start_matches('/'));
    let file = home.join("w.plue.py");
    std::fs::write(&file, workflow).unwrap();
    if let Some((uid, gid)) = container.user.as_deref().and_then(|u| u.split_once(':')) {
        std::os::unix::fs::chown(&file, uid.parse().ok(), gid.parse().ok()).unwrap();
    }
    let run_args = [
        "run",
        "w.plue.py",
        "--runners",
        "1",
        "--summary-json",
        "summary.json",
    ];
    let ran = container.run(&run_args, Duration::from_secs(90));
    eprintln!("{}", shown(&run_args, &ran));
    assert!(ran.success, "{}", shown(&run_args, &ran));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "succeeded", "{summary}");
    let user = container.user.clone().unwrap_or_else(|| "0:0".into());
    assert!(
        ran.stdout.contains(&format!("as {user} in ")),
        "the bash step runs as the image's user {user}: {}",
        ran.stdout
    );
    assert!(ran.stdout.contains("git version "), "{}", ran.stdout);
    assert!(ran.stdout.contains("python 3."), "{}", ran.stdout);
    let cas: usize = ran
        .stdout
        .split(" CAs ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(cas > 50, "Python finds the CA certificates: {}", ran.stdout);
    drop(root);
}
