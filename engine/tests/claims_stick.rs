//! Claims that stick (issue 70), end to end: a runner stopped (SIGSTOP) while the engine
//! holds its long-poll — as on a node that hangs — takes no step away. A claim it got
//! before it stopped is never acknowledged and goes back to the queue without using a
//! retry; a poll it sent long before is handed nothing at all; either way another runner
//! runs the step, as its first try.

use crate::support;
use std::time::Duration;

use crate::support::{
    client, get_json, get_text, log_lines, runner_pid, serial, start_run, wait_for, Sandbox,
    RUNNER_TOKEN,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Heartbeats every second: a runner silent for 2 s (the liveness window) is handed
/// nothing; a claim is returned after 1.5 s unacknowledged; nobody is declared lost.
const TIMERS: [&str; 6] = [
    "--heartbeat-ms",
    "1000",
    "--lost-after-ms",
    "120000",
    "--claim-ack-ms",
    "1500",
];

/// `plue serve` with no runners of its own (the test starts them) and [`TIMERS`].
async fn engine_without_runners(sandbox: &Sandbox) -> support::Engine {
    let data = sandbox.path("data");
    let mut args = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--runners",
        "0",
        "--runner-token",
        RUNNER_TOKEN,
    ];
    args.extend(TIMERS);
    sandbox.serve_engine(&args).await
}

/// One step, no retries: a spent retry would fail the run.
fn one_step(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.write_workflow(
        "one",
        &["Step.bash('one', 'echo try $PLUE_ATTEMPT', retries=0)"],
    )
}

/// The live runner named `name` (`GET /api/runners`), once it is idle.
async fn idle_runner(http: &reqwest::Client, engine: &str, name: &str) -> Value {
    wait_for(
        Duration::from_secs(30),
        &format!("{name} to poll"),
        || async {
            let runners = get_json(http, &format!("{engine}/api/runners")).await;
            runners
                .as_array()?
                .iter()
                .find(|r| r["name"] == name && r["state"] == "idle")
                .cloned()
        },
    )
    .await
}

/// `(attempt, status, runner)` of every attempt of the run's step `one` (the run record).
async fn attempts(http: &reqwest::Client, engine: &str, run_id: i64) -> Vec<(i64, String, String)> {
    let record = get_json(http, &format!("{engine}/api/runs/{run_id}/record")).await;
    record["attempt_records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap_or(0),
                a["status"].as_str().unwrap_or_default().to_string(),
                a["runner"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The run, once final; it must have succeeded.
async fn succeeded(sandbox: &Sandbox, http: &reqwest::Client, engine: &str, run_id: i64) -> Value {
    let run = support::wait_final(http, engine, run_id, Duration::from_secs(60)).await;
    assert_eq!(
        run["status"],
        "succeeded",
        "{run}\n{}",
        sandbox.diagnostics()
    );
    run
}

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).expect("signalling the runner");
}

// regression (issue 70): a runner whose long-poll the engine held was handed the step
// after it had stopped, the claim counted as taken (and as its heartbeat), and the step
// failed with its retries spent once the runner was declared lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_a_stopped_runner_never_acknowledged_goes_to_another_without_a_retry() {
    let _serial = serial().await;
    let sandbox = Sandbox::new("claims-unacknowledged");
    let engine = engine_without_runners(&sandbox).await;
    let http = client();
    let e = engine.url.as_str();
    let stopped = sandbox.runner("stopped", e, &[]);
    idle_runner(&http, e, "stopped").await;
    // Stopped with its poll held by the engine, its last heartbeat less than a second old:
    // the poll still counts as fresh, so the step is claimed for it.
    signal(stopped, Signal::SIGSTOP);
    let run_id = start_run(&http, e, &one_step(&sandbox), &sandbox.path("ws")).await;
    wait_for(
        Duration::from_secs(10),
        "the stopped runner's claim",
        || async {
            let seen = attempts(&http, e, run_id).await;
            (seen == [(1, "claimed".to_string(), "stopped".to_string())]).then_some(())
        },
    )
    .await;
    sandbox.runner("healthy", e, &[]);
    let run = succeeded(&sandbox, &http, e, run_id).await;
    assert_eq!(
        attempts(&http, e, run_id).await,
        [
            (1, "unacknowledged".to_string(), "stopped".to_string()),
            (2, "succeeded".to_string(), "healthy".to_string()),
        ],
        "{run}"
    );
    // Operators see the suspect runner and the count.
    let runners = get_json(&http, &format!("{e}/api/runners")).await;
    let suspect = runners
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"] == "stopped"))
        .map(|r| r["suspect_since"].clone());
    assert!(
        suspect.as_ref().is_some_and(Value::is_i64),
        "stopped is not shown suspect: {runners}"
    );
    let metrics = get_text(&http, &format!("{e}/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("plue_claims_unacknowledged_total ") && l.ends_with(" 1")),
        "{metrics}"
    );

    // Resumed, the stopped runner reads the assignment it was handed, is refused its
    // acceptance, and runs none of it; its poll again proves it alive.
    signal(stopped, Signal::SIGCONT);
    wait_for(
        Duration::from_secs(10),
        "the resumed runner to poll",
        || async {
            let runners = get_json(&http, &format!("{e}/api/runners")).await;
            runners.as_array()?.iter().find(|r| {
                r["name"] == "stopped" && r["state"] == "idle" && r["suspect_since"].is_null()
            })?;
            Some(())
        },
    )
    .await;
    let lines = log_lines(&http, e, run_id, "one").await.expect("the log");
    let texts: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
    assert_eq!(texts, ["try 2"], "the returned claim ran nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_held_for_a_runner_silent_past_the_window_is_handed_nothing() {
    let _serial = serial().await;
    let sandbox = Sandbox::new("claims-silent");
    let engine = engine_without_runners(&sandbox).await;
    let http = client();
    let e = engine.url.as_str();
    let stopped = sandbox.runner("stopped", e, &[]);
    idle_runner(&http, e, "stopped").await;
    signal(stopped, Signal::SIGSTOP);
    // Past the liveness window (two heartbeats): the held poll proves nothing any more.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let run_id = start_run(&http, e, &one_step(&sandbox), &sandbox.path("ws")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        attempts(&http, e, run_id).await,
        [],
        "claimed for a stopped runner"
    );
    sandbox.runner("healthy", e, &[]);
    succeeded(&sandbox, &http, e, run_id).await;
    assert_eq!(
        attempts(&http, e, run_id).await,
        [(1, "succeeded".to_string(), "healthy".to_string())]
    );
}

/// As the check does it: a local pool of two runners, one stopped while it polls;
/// whichever poll the step reaches first, it runs on the other runner, its retry unspent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_runner_stopped_mid_poll_leaves_the_step_to_the_other() {
    let _serial = serial().await;
    let sandbox = Sandbox::new("claims-local");
    let mut args = vec!["--max-runners", "2"];
    args.extend(TIMERS);
    let engine = sandbox.serve_local("2", &args).await;
    let http = client();
    let e = engine.url.as_str();
    let both = wait_for(Duration::from_secs(30), "two idle runners", || async {
        let runners = get_json(&http, &format!("{e}/api/runners")).await;
        let idle: Vec<String> = runners
            .as_array()?
            .iter()
            .filter(|r| r["state"] == "idle")
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect();
        (idle.len() == 2).then_some(idle)
    })
    .await;
    let stopped = &both[0];
    let pid = runner_pid(stopped).expect("the stopped runner's process");
    signal(pid as u32, Signal::SIGSTOP);
    let run_id = start_run(&http, e, &one_step(&sandbox), &sandbox.path("ws")).await;
    let run = succeeded(&sandbox, &http, e, run_id).await;
    let seen = attempts(&http, e, run_id).await;
    let last = seen.last().expect("an attempt");
    assert_eq!(last.1, "succeeded", "{seen:?}\n{run}");
    assert_ne!(&last.2, stopped, "{seen:?}");
    assert!(
        seen.iter()
            .all(|(_, status, _)| matches!(status.as_str(), "succeeded" | "unacknowledged")),
        "a try was spent: {seen:?}"
    );
    // A claim returned on the way is listed by the pool's view, with its runner suspect.
    if seen.iter().any(|(_, status, _)| status == "unacknowledged") {
        let pool = get_json(&http, &format!("{e}/api/pool")).await;
        assert_eq!(
            pool["unacknowledged_claims"][0]["runner"],
            stopped.as_str(),
            "{pool}"
        );
        assert_eq!(
            pool["suspect_runners"][0]["name"],
            stopped.as_str(),
            "{pool}"
        );
    }
    signal(pid as u32, Signal::SIGCONT);
}
