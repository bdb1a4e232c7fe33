//! A runner makes its first attempt's tree while it waits for work, as it makes each next
//! one while the last attempt's end travels: a runner that takes one step (a Kubernetes
//! pod's, `--ephemeral`) used to create that tree on its step's path. The tree is the
//! runner's own until a step takes it, and gone with the runner when none does.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::{self, RepoEngine, ADMIN_TOKEN, RUNNER_TOKEN};

/// The entries of `dir` whose names start with `prefix`.
fn named(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_runner_has_its_first_tree_made_and_leaves_none_behind() {
    let _serial = support::serial().await;
    let config = support::engine_config(RUNNER_TOKEN, ADMIN_TOKEN, "runner-ahead-vault-key");
    let h = RepoEngine::launch("runner-ahead", config, false).await;
    let pid = h.sandbox.runner("idle", &h.engine.url, &["--ephemeral"]);
    let work = h.sandbox.path("work-idle");
    let made = support::wait_for(Duration::from_secs(30), "the first tree made ahead", || {
        let work = work.clone();
        async move {
            let made = named(&work, "ahead-");
            (!made.is_empty()).then_some(made)
        }
    })
    .await;
    assert_eq!(
        made,
        [format!("ahead-{pid}-0")],
        "one tree, the runner's own"
    );
    let tree = work.join(&made[0]);
    let mut inside = named(&tree, "");
    inside.sort();
    assert_eq!(inside, ["home", "output", "tmp", "workspace"]);
    assert!(named(&work, "attempt-").is_empty(), "no attempt yet");

    // Stopped without having taken a step: nothing of it is left.
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    h.sandbox.wait_exit(pid, Duration::from_secs(30)).await;
    assert!(named(&work, "ahead-").is_empty(), "{:?}", named(&work, ""));
    h.engine.shutdown().await;
}
