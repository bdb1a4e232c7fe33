//! Nothing outlives its step, attacked end to end: a `bash` step under `plue run` starts
//! `sleep 30`s that escape in every way a process can — a double fork into a new session,
//! a new process group (`set -m`, `setsid -f`), a cleared environment, `nohup` — records
//! their pids, and succeeds. The moment `plue run` has returned, none of them may run.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

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
    std::fs::write(dir.path().join("w.plue.py"), workflow).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_plue"))
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("PLUE_DATA_DIR")
        .args(["run", "w.plue.py", "--runners", "1"])
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
