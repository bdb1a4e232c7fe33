//! A rolling restart as Kubernetes does one: two engines on one PostgreSQL, each with a
//! runner streaming numbered lines, are SIGTERMed and started again one after the other
//! while the steps run. Nothing may be lost or doubled: every step succeeds in its first
//! attempt and every line is stored exactly once.

use crate::support;
use std::path::Path;
use std::time::Duration;

use crate::support::{client, log_lines, start_run, wait_for, Engine, Sandbox};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LINES: usize = 500;
const STEPS: usize = 2;

/// SIGTERMs `engine`, waits for its clean exit and starts it again on the same port.
async fn restart(sandbox: &Sandbox, name: &str, engine: &Engine, args: &[&str]) -> Engine {
    kill(Pid::from_raw(engine.pid as i32), Signal::SIGTERM).unwrap();
    let status = sandbox.wait_exit(engine.pid, Duration::from_secs(20)).await;
    assert!(status.success(), "{name} did not drain cleanly: {status:?}");
    let port: u16 = engine.url.rsplit(':').next().unwrap().parse().unwrap();
    sandbox.serve(name, port, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_engines_loses_no_step_and_no_log_line() {
    let _serial = support::serial().await;
    let why = "a rolling restart of two engines needs a PostgreSQL";
    let Some((_postgres, url)) = support::postgres_database(why) else {
        return;
    };
    let sandbox = Sandbox::new("rollout");
    let steps: Vec<String> = (0..STEPS)
        .map(|i| {
            format!(
                "        Step.bash('s{i}', 'for i in $(seq 1 {LINES}); do echo s{i} line $i; sleep 0.01; done')"
            )
        })
        .collect();
    let workflow = sandbox.write(
        "ws/stream.plue.py",
        &format!(
            "def workflow():\n    return Plan(name='stream', triggers=[Trigger.manual()], steps=[\n{},\n    ])\n",
            steps.join(",\n")
        ),
    );
    let drain = ["--drain-delay", "1", "--shutdown-grace", "10"];
    let args = |data: &Path| support::shared_db_args(&url, &drain, data);
    let (args_a, args_b) = (args(&sandbox.path("data-a")), args(&sandbox.path("data-b")));
    let args_a: Vec<&str> = args_a.iter().map(String::as_str).collect();
    let args_b: Vec<&str> = args_b.iter().map(String::as_str).collect();
    let (port_a, port_b) = support::two_free_ports();
    let a = sandbox.serve("engine-a", port_a, &args_a).await;
    let b = sandbox.serve("engine-b", port_b, &args_b).await;
    sandbox.runner("ra", &a.url, &[]);
    sandbox.runner("rb", &b.url, &[]);
    let http = client();
    let run_id = start_run(&http, &a.url, &workflow, &sandbox.path("ws")).await;
    // Both runners busy, one step each, before the rollout starts.
    wait_for(Duration::from_secs(30), "both steps running", || async {
        let run = support::run_view(&http, &b.url, run_id).await?;
        let running = (0..STEPS)
            .filter(|i| support::step(&run, &format!("s{i}"))["status"] == "running")
            .count();
        (running == STEPS).then_some(())
    })
    .await;

    let a = restart(&sandbox, "engine-a2", &a, &args_a).await;
    let b = restart(&sandbox, "engine-b2", &b, &args_b).await;

    let run = sandbox
        .wait_succeeded(&http, &a.url, run_id, Duration::from_secs(90))
        .await;
    for i in 0..STEPS {
        let id = format!("s{i}");
        let step = support::step(&run, &id);
        assert_eq!(
            step["attempts"], 1,
            "{id} ran again after the restart: {step}"
        );
        let lines = log_lines(&http, &b.url, run_id, &id)
            .await
            .expect("the lines");
        let texts: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
        let expected: Vec<String> = (1..=LINES).map(|n| format!("{id} line {n}")).collect();
        assert_eq!(texts, expected, "{id}: every line once, in order");
    }
}
