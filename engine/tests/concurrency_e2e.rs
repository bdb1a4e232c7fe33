//! Concurrency groups end to end, through the real `plue serve` with a local pool of two
//! runners (so only the group, not a lack of runners, keeps runs apart):
//! - two runs of one group run one after the other: the second is `pending` (its group
//!   shown) while the first runs, and the timestamps their steps record never interleave;
//! - with `cancel_in_progress=True` a newer run cancels the running one, which ends
//!   `cancelled` with a reason naming the newer run and the group, then the newer one runs.
//!
//! Each test owns a [`Sandbox`] whose drop kills every process it started.

use crate::support;
use std::time::Duration;

use crate::support::{
    client, run_view, start_run, step, wait_final, wait_for, wait_succeeded, Sandbox,
};

/// A manually triggered workflow in group `deploy-{branch}` with one bash step `command`.
fn workflow(cancel_in_progress: bool, env: &str, command: &str) -> String {
    let cancel = if cancel_in_progress { "True" } else { "False" };
    format!(
        "def workflow(ctx):\n    return Plan(name='deploy', triggers=[Trigger.manual()],\n        concurrency='deploy-{{branch}}', cancel_in_progress={cancel},\n        env={env},\n        steps=[Step.bash('work', {command:?})])\n"
    )
}

/// Writes [`workflow`] to the sandbox's `ws/deploy.plue.py`, its step given the one
/// environment variable `(name, path)`; the file's path.
fn write_deploy(
    sandbox: &Sandbox,
    cancel_in_progress: bool,
    (name, path): (&str, &std::path::Path),
    command: &str,
) -> std::path::PathBuf {
    let env = format!("{{'{name}': {:?}}}", path.to_str().unwrap());
    sandbox.write(
        "ws/deploy.plue.py",
        &workflow(cancel_in_progress, &env, command),
    )
}

async fn engine(sandbox: &Sandbox) -> support::Engine {
    sandbox.serve_local("2", &["--heartbeat-ms", "200"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_one_group_run_one_after_the_other() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("concurrency");
    let times = sandbox.shared("times");
    let ws = sandbox.path("ws");
    let file = write_deploy(
        &sandbox,
        false,
        ("TIMES", &times),
        "echo \"start $(date +%s%N)\" >> \"$TIMES\"; sleep 1.5; echo \"end $(date +%s%N)\" >> \"$TIMES\"",
    );
    let http = client();
    let engine = engine(&sandbox).await;
    let url = engine.url.as_str();

    let first = start_run(&http, url, &file, &ws).await;
    let second = start_run(&http, url, &file, &ws).await;
    let waiting = run_view(&http, url, second).await.expect("the second run");
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(waiting["concurrency_group"], "deploy-main", "{waiting}");
    assert_eq!(
        waiting["reason"],
        format!("waiting for run {first} in concurrency group 'deploy-main'"),
        "{waiting}"
    );
    assert_eq!(step(&waiting, "work")["status"], "pending", "{waiting}");
    let listed = sandbox
        .plue(&["runs", "--server", url])
        .output()
        .expect("plue runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&second.to_string()) && l.contains("pending")),
        "{listed}"
    );

    for run_id in [first, second] {
        wait_succeeded(&http, url, run_id, Duration::from_secs(90)).await;
    }
    let recorded = std::fs::read_to_string(&times).unwrap();
    let events: Vec<(&str, u128)> = recorded
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').expect("'what time'");
            (what, at.parse().expect("nanoseconds"))
        })
        .collect();
    assert_eq!(
        events.iter().map(|(what, _)| *what).collect::<Vec<_>>(),
        ["start", "end", "start", "end"],
        "the runs overlapped: {recorded}"
    );
    assert!(
        events.windows(2).all(|w| w[0].1 <= w[1].1),
        "not in time order: {recorded}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_in_progress_cancels_the_running_run_with_a_reason() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("concurrency-cancel");
    sandbox.shared("unused");
    let mark = sandbox.path("shared/first-started");
    let ws = sandbox.path("ws");
    // The first run to start marks it and sleeps; the next one finds the mark and ends.
    let file = write_deploy(
        &sandbox,
        true,
        ("MARK", &mark),
        "if [ -e \"$MARK\" ]; then echo second; else touch \"$MARK\"; sleep 120; fi",
    );
    let http = client();
    let engine = engine(&sandbox).await;
    let url = engine.url.as_str();

    let old = start_run(&http, url, &file, &ws).await;
    wait_for(
        Duration::from_secs(60),
        "the first run's step to run",
        || async {
            let run = run_view(&http, url, old).await?;
            (step(&run, "work")["status"] == "running" && mark.exists()).then_some(())
        },
    )
    .await;
    let new = start_run(&http, url, &file, &ws).await;
    let cancelled = wait_final(&http, url, old, Duration::from_secs(60)).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(
        cancelled["reason"],
        format!("superseded by run {new} in concurrency group 'deploy-main'"),
        "{cancelled}"
    );
    let run = wait_succeeded(&http, url, new, Duration::from_secs(60)).await;
    let old_end = cancelled["finished_at"].as_i64().unwrap();
    let new_start = run["started_at"].as_i64().unwrap();
    assert!(
        old_end <= new_start,
        "the newer run started ({new_start}) before the older one was final ({old_end})"
    );
}
