//! A local runner's death is noticed at once: `plue serve`'s pool is its runners' parent,
//! so a runner killed mid-step (`kill -9`) is reaped at the pool's next look and its
//! attempt fails with how it died, not after the heartbeat timeout (10 s) that remote
//! runners keep.

use crate::support;
use std::time::{Duration, Instant};

use crate::support::{
    client, get_json, runner_pid, serial, start_run, wait_final, wait_for, Sandbox,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

// regression (issue 36): a local runner killed with `kill -9` was noticed only by the
// heartbeat timeout, 10.7–15.3 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_runner_killed_mid_step_fails_its_attempt_at_once() {
    let _serial = serial().await;
    let sandbox = Sandbox::new("local-runner-death");
    let data = sandbox.path("data");
    let args = ["--data-dir", data.to_str().unwrap(), "--runners", "1"];
    let engine = sandbox.serve_engine(&args).await;
    let http = client();
    let file = sandbox.write_workflow("slow", &[support::SLOW_STEP]);
    let run_id = start_run(&http, &engine.url, &file, &sandbox.path("ws")).await;
    // Mid-step: the step started (its claim acknowledged), not merely claimed. A runner
    // killed between its claim and its acknowledgement has its step handed back to the
    // queue instead (claims stick only once acknowledged), which is another test's case.
    wait_for(Duration::from_secs(30), "the step running", || async {
        let run = get_json(&http, &format!("{}/api/runs/{run_id}", engine.url)).await;
        (support::step(&run, "slow")["status"] == "running").then_some(())
    })
    .await;
    let name = wait_for(Duration::from_secs(30), "a busy runner", || async {
        let runners = get_json(&http, &format!("{}/api/runners", engine.url)).await;
        runners
            .as_array()?
            .iter()
            .find(|r| r["state"] == "busy")
            .and_then(|r| r["name"].as_str().map(str::to_string))
    })
    .await;
    let pid = runner_pid(&name)
        .unwrap_or_else(|| panic!("no process of runner {name}\n{}", sandbox.diagnostics()));
    let killed = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    // Well inside the heartbeat timeout: only the pool's reaping can fail it this soon.
    let done = wait_final(&http, &engine.url, run_id, Duration::from_secs(2)).await;
    let after = killed.elapsed();
    let step = support::step(&done, "slow");
    assert_eq!(step["status"], "failed", "{done}");
    assert_eq!(step["reason"], "runner exited: signal 9", "{done}");
    eprintln!("the attempt failed {after:?} after its runner was killed");
    assert!(after < Duration::from_secs(2), "{after:?}");
    // The runner is gone, not lost: the pool told the store.
    let runners = get_json(&http, &format!("{}/api/runners?all=1", engine.url)).await;
    let state = runners
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == name.as_str())
        .map(|r| r["state"].clone());
    assert!(state.is_none() || state == Some("gone".into()), "{runners}");
}
