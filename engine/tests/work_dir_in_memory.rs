//! A root runner's work directory in memory (`runner::work_tmpfs`), end to end through
//! `plue run`: the step's workspace is on the runner's tmpfs, which the host never sees —
//! no mount propagates to it, and the attempt directory exists only in the runner's view —
//! while the step runs and after; `--work-dir-on-disk` keeps the directory on disk.

use crate::support;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The step: reports its workspace's filesystem type and path into the drop box, then
/// waits (bounded) for the test to have looked from the host.
const STEP: &str = r#"
def workflow():
    return Plan(name="t", triggers=[Trigger.manual()], steps=[Step.bash("look", """
        echo data > made-here
        printf '%s %s\n' "$(stat -f -c %T .)" "$PWD" > "$DROP/seen.tmp"
        mv "$DROP/seen.tmp" "$DROP/seen"
        for i in $(seq 1000); do [ -e "$DROP/go" ] && { echo looked; exit 0; }; sleep 0.01; done
        echo "the test never looked" >&2; exit 1
    """)])
"#;

/// What the step saw and what the host saw meanwhile.
struct Seen {
    /// The step's `stat -f -c %T .` of its workspace.
    fs_type: String,
    /// Whether the step's workspace existed in the host's view while the step ran.
    on_host: bool,
    /// The host's mounts named as the runner's tmpfs, while the step ran.
    host_mounts: Vec<String>,
}

/// `plue run` of `workflow` (with `extra`) in a fresh directory with a drop box (`$DROP`)
/// the step's user may write, the runner's work directory beside it; waits (bounded) until
/// the step wrote `$DROP/seen`, and answers the directory, the drop box, the running
/// `plue` and what the step wrote.
fn start(workflow: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf, Child, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A root runner runs the step as an unprivileged user, which must write here.
    let drop = dir.path().join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::set_permissions(&drop, std::fs::Permissions::from_mode(0o777)).unwrap();
    let child = support::plue_run_one(dir.path(), workflow)
        .args(extra)
        // The runner's work directory is a sibling of the drop box, which the step keeps.
        .env("TMPDIR", dir.path())
        .env("DROP", &drop)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("plue runs");
    let seen_file = drop.join("seen");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = std::fs::read_to_string(&seen_file).unwrap_or_default();
    (dir, drop, child, seen)
}

fn run_step(extra: &[&str]) -> Seen {
    let (_dir, drop, child, seen) = start(STEP, extra);
    let host_mounts = plue_work_mounts();
    let (fs_type, workspace) = seen.trim().split_once(' ').unwrap_or(("", ""));
    let on_host = !workspace.is_empty() && Path::new(workspace).exists();
    std::fs::write(drop.join("go"), b"").unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("looked"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!fs_type.is_empty(), "the step reported nothing: {seen:?}");
    assert!(
        plue_work_mounts().is_empty(),
        "a runner's tmpfs stayed mounted on the host"
    );
    Seen {
        fs_type: fs_type.to_string(),
        on_host,
        host_mounts,
    }
}

/// This process's mounts whose source is the runner's tmpfs (`plue-work`).
fn plue_work_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| {
            line.split(" - ")
                .nth(1)
                .is_some_and(|fs| fs.split_whitespace().nth(1) == Some("plue-work"))
        })
        .map(str::to_string)
        .collect()
}

fn host_tmp_is_tmpfs() -> bool {
    ::runner::work_tmpfs::is_tmpfs(&std::env::temp_dir())
}

#[test]
fn a_root_runners_steps_work_in_its_own_tmpfs_which_the_host_never_sees() {
    let seen = run_step(&[]);
    if !nix::unistd::geteuid().is_root() {
        // Only root may mount: the directory stays where it was.
        if !host_tmp_is_tmpfs() {
            assert_ne!(seen.fs_type, "tmpfs");
        }
        return;
    }
    assert_eq!(seen.fs_type, "tmpfs", "the step's workspace is in memory");
    assert!(
        !seen.on_host,
        "the attempt directory is the runner's alone, not on the host"
    );
    assert!(
        seen.host_mounts.is_empty(),
        "the runner's mount reached the host: {:?}",
        seen.host_mounts
    );
}

#[test]
fn work_dir_on_disk_keeps_the_attempt_directories_on_the_host() {
    let seen = run_step(&["--work-dir-on-disk"]);
    assert!(seen.on_host, "the step's workspace is on the host's disk");
    if !host_tmp_is_tmpfs() {
        assert_ne!(seen.fs_type, "tmpfs");
    }
}

/// The directory removed on the host (a `/tmp` cleaner) takes the runner's tmpfs with it,
/// and another user makes the path again: the runner writes nothing there — it stops
/// before its next attempt, which fails — and says why.
#[test]
fn a_runner_whose_tmpfs_went_writes_nothing_into_the_path_made_again() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let workflow = r#"
def workflow():
    return Plan(name="t", triggers=[Trigger.manual()], steps=[
        Step.bash("first", """
            echo "$PWD" > "$DROP/seen.tmp"; mv "$DROP/seen.tmp" "$DROP/seen"
            for i in $(seq 1000); do [ -e "$DROP/go" ] && exit 0; sleep 0.01; done
            exit 1
        """),
        Step.bash("second", "echo second-ran", depends_on=["first"]),
    ])
"#;
    let (dir, drop, child, seen) = start(workflow, &[]);
    // <work>/attempt-…/workspace: the work directory, empty on the host.
    let work = Path::new(seen.trim())
        .parent()
        .and_then(Path::parent)
        .expect("the step said where it ran")
        .to_owned();
    std::fs::remove_dir(&work).expect("the host's directory is empty: the tmpfs is the runner's");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Whatever appears in it until `plue run` ends (and removes it).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (work, done) = (work.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(entries) = std::fs::read_dir(&work) {
                    seen.extend(entries.flatten().map(|e| e.file_name()));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            seen
        })
    };
    std::fs::write(drop.join("go"), b"").unwrap();
    let output = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = watcher.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        written.is_empty(),
        "the runner wrote into the path made again: {written:?}"
    );
    assert!(!output.status.success(), "{stdout}");
    assert!(!stdout.contains("second-ran"), "{stdout}");
    let log = std::fs::read_to_string(dir.path().join(".plue/runners.log")).unwrap_or_default();
    assert!(
        log.contains("no longer this runner's tmpfs"),
        "{log}\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
