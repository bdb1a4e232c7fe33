//! What a runner knows of cgroups without making any: which cgroup a process is in, and
//! whether every step so far ended with its cgroup emptied. The lowest layer of
//! containment: `containment` makes and empties step cgroups and records here; `step_user`
//! and `reaper` only read.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a step of this runner ended without a cgroup that was emptied (no cgroup on
/// this host, a failed join, a cgroup that would not empty, a start the zygote gave up
/// on). Until then every process any step of this runner started is known dead when its
/// step ends — a cgroup holds every descendant and a step cannot leave the one the runner
/// made — so releasing a step user need not look for its processes (`step_user`).
static UNCONTAINED: AtomicBool = AtomicBool::new(false);

/// Records that a step ended without an emptied cgroup (see [`UNCONTAINED`]).
pub(crate) fn note_uncontained() {
    UNCONTAINED.store(true, Ordering::Relaxed);
}

/// Whether every step of this runner so far ended with its cgroup emptied.
pub(crate) fn every_step_emptied() -> bool {
    !UNCONTAINED.load(Ordering::Relaxed)
}

/// The cgroup v2 path of process `pid` (as `/proc/<pid>/cgroup` names it), if readable.
/// The sweep leaves a process in a running step's cgroup to that step: the runner records
/// which cgroup it made for each (a name proves nothing: a step whose user may write to
/// the runner's cgroup can make one named like a step's).
pub(crate) fn cgroup_of(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|text| own_cgroup(&text))
}

/// The cgroup v2 path in a `/proc/<pid>/cgroup` text, unless the cgroup was deleted.
pub(crate) fn own_cgroup(text: &str) -> Option<String> {
    let path = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    (path.starts_with('/') && !path.ends_with(" (deleted)")).then(|| path.to_owned())
}
