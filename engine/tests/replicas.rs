//! Engine replicas on one PostgreSQL, in one process: two in-process engines
//! (`server::start` on `127.0.0.1:0`) over two stores of one database, and a runner
//! speaking the protocol over HTTP to one of them. Every timer that could wake the
//! runner's waiting poll is set far beyond the poll's wait, so a poll that ends with work
//! was woken by the other engine's notification (`store::wake`), not by a timer: no
//! assertion here is on how fast.

use std::time::Duration;

use crate::support;

use plue_server::server::{self, EngineConfig, RunningEngine};
use plue_store::Store;
use plue_types::protocol as wire;
use serde_json::json;

const REGISTRATION: &str = "registration-token-of-the-replicas-test";
/// Every timer that could wake a waiting poll: its re-check, the due-work watch, and the
/// sweeper's pass (every other heartbeat).
const TIMERS: Duration = Duration::from_secs(600);
/// The runner's poll: far shorter than [`TIMERS`], far longer than a notification takes.
const WAIT_MS: u64 = 20_000;

/// An engine over its own store of the database at `url`, its timers at [`TIMERS`].
async fn engine(url: &str) -> RunningEngine {
    let store = Store::connect(url)
        .await
        .expect("a store of the shared database");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = EngineConfig::new(REGISTRATION.into());
    config.poll_recheck = TIMERS;
    config.due_check = TIMERS;
    config.heartbeat_interval = TIMERS;
    config.lost_after = TIMERS * 2;
    server::start(store, listener, config, None)
        .await
        .expect("start an engine")
}

// regression (bench replicas, issue 51): a step queued through one engine woke only the
// polls of that engine; a runner polling another found it at its next re-check (claim p99
// 95 ms with two engines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_queued_through_one_engine_wakes_a_runner_polling_the_other() {
    let why = "engines waking each other need a PostgreSQL";
    let Some((_postgres, url)) = support::postgres_database(why) else {
        return;
    };
    let a = engine(&url).await;
    let b = engine(&url).await;
    let http = reqwest::Client::new();
    let session = support::register_runner(&http, &b.url, REGISTRATION, "polls-b").await;
    let poll = tokio::spawn({
        let (http, url) = (http.clone(), format!("{}{}", b.url, wire::POLL));
        async move {
            let answer = http
                .post(url)
                .bearer_auth(session)
                .json(&json!({ "wait_ms": WAIT_MS }))
                .send()
                .await
                .expect("the poll's answer");
            answer
                .json::<wire::PollResponse>()
                .await
                .expect("a poll response")
        }
    });
    // The poll waits on B (it looked once and found nothing: a little time for that look;
    // should the run below come first, the look claims it and this test proves less, never
    // fails wrongly).
    support::wait_for(Duration::from_secs(30), "B's poll waiting", || async {
        (b.executor.events().waiting_polls() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let plan = support::plan("w", vec![support::bash_step("only", "true")]);
    let run_id = support::start_plan_run(&a.executor, "/w.plue.py", &plan, None).await;

    let answer = poll.await.expect("the poll task");
    let assignment = answer
        .assignment
        .expect("B's poll woken by A's notification before its wait ended");
    assert_eq!(
        (assignment.run_id, assignment.step_id.as_str()),
        (run_id, "only")
    );
    let heard = |engine: &RunningEngine| {
        let wakes = engine.replica_wakes().expect("wakes on PostgreSQL");
        wakes
            .counts()
            .heard
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(heard(&b) >= 1, "B heard A");
    a.shutdown().await;
    b.shutdown().await;
}
