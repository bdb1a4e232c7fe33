//! Log quotas, played by an attacker printing without end:
//! - through the real `plue serve`: a step printing 20 MB past a small step quota fails
//!   with the quota as its reason, the engine keeps no more than the quota, the stored log
//!   and a live follower's stream both end with the marker line; a step of a run whose
//!   earlier steps used most of the run's quota is cut at the run's;
//! - through the real `plue run`: its printer shows the marker and it exits failed;
//! - the store's counters on both backends (PostgreSQL on a throw-away server, see
//!   `testkit`): what a batch adds, a batch sent again adding nothing, the run's total, a
//!   fork run read as one, the truncated mark.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use crate::support;

use plue_core::executor::Executor;
use plue_store::events::Events;
use plue_store::{now_ms, LogAttempt, RunRepo};
use plue_types::protocol::{LogLine, Stream};
use serde_json::Value;

/// 20 MB of 2,001-byte lines.
const FLOOD: &str = r#"def workflow():
    return Plan(name='flood', triggers=[Trigger.manual()], steps=[
        Step.bash('spam', "yes \"$(head -c 2000 /dev/zero | tr '\\0' a)\" | head -c 20000000"),
    ])
"#;

/// Two steps printing 100 KB each, then one printing without end.
const RUN_FLOOD: &str = r#"def workflow():
    return Plan(name='run-flood', triggers=[Trigger.manual()], steps=[
        Step.bash('one', "yes \"$(head -c 999 /dev/zero | tr '\\0' b)\" | head -c 100000 || true"),
        Step.bash('two', "yes \"$(head -c 999 /dev/zero | tr '\\0' c)\" | head -c 100000 || true", depends_on=['one']),
        Step.bash('spam', "yes \"$(head -c 999 /dev/zero | tr '\\0' d)\" | head -c 20000000", depends_on=['two']),
    ])
"#;

const STEP_QUOTA: u64 = 300_000;
const RUN_QUOTA: u64 = 250_000;

fn marker(holder: &str, quota: u64, flag: &str) -> String {
    format!("log truncated: {holder} passed its log quota of {quota} bytes (plue serve {flag})")
}

/// Bytes of text of `lines` (JSON lines of the logs API) and the last one.
fn text_bytes(lines: &[Value]) -> u64 {
    lines
        .iter()
        .map(|l| l["text"].as_str().unwrap_or_default().len() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_printing_past_its_log_quota_fails_and_its_log_ends_with_the_marker() {
    let _serial = support::serial().await;
    let sandbox = support::Sandbox::new("log-quota");
    sandbox.write("ws/flood.plue.py", FLOOD);
    sandbox.write("ws/run-flood.plue.py", RUN_FLOOD);
    let ws = sandbox.path("ws");
    let http = support::client();
    let engine = sandbox
        .serve_one_runner(
            "engine",
            "data",
            &[
                "--quota-step-log-bytes",
                &STEP_QUOTA.to_string(),
                "--quota-run-log-bytes",
                "100000000",
            ],
        )
        .await;
    let url = engine.url.as_str();
    let run_id = support::start_run(&http, url, &ws.join("flood.plue.py"), &ws).await;
    // A live follower from the start: the stream ends with the marker, then `end`.
    let follow = http
        .get(format!("{url}/api/runs/{run_id}/steps/spam/logs"))
        .header("accept", "text/event-stream")
        .send();
    let stream = tokio::time::timeout(Duration::from_secs(120), async {
        follow.await.unwrap().text().await.unwrap()
    })
    .await
    .expect("the live stream ends");
    let run = support::wait_final(&http, url, run_id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "failed", "{run}");
    let expected = marker("this step", STEP_QUOTA, "--quota-step-log-bytes");
    assert_eq!(
        support::step(&run, "spam")["reason"],
        expected.as_str(),
        "{run}\n{}",
        sandbox.diagnostics()
    );
    let lines = support::log_lines(&http, url, run_id, "spam")
        .await
        .unwrap();
    let last = lines.last().expect("lines");
    assert_eq!(
        last["text"],
        expected.as_str(),
        "the marker is the last line"
    );
    assert_eq!(last["stream"], "system");
    let stored = text_bytes(&lines[..lines.len() - 1]);
    assert!(
        stored <= STEP_QUOTA && stored > STEP_QUOTA - 2001,
        "{stored} bytes stored before the marker"
    );
    let data_lines: Vec<&str> = stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let last_line = data_lines
        .iter()
        .rev()
        .find(|d| d.contains("\"text\""))
        .expect("line events");
    assert!(
        last_line.contains(&expected),
        "the follower's last line: {last_line}"
    );

    // A run's earlier steps used 200 KB of its 250 KB: its third step is cut at the run's.
    let engine2 = sandbox
        .serve_one_runner(
            "engine2",
            "data2",
            &["--quota-run-log-bytes", &RUN_QUOTA.to_string()],
        )
        .await;
    let url = engine2.url.as_str();
    let run_id = support::start_run(&http, url, &ws.join("run-flood.plue.py"), &ws).await;
    let run = support::wait_final(&http, url, run_id, Duration::from_secs(120)).await;
    assert_eq!(support::step(&run, "one")["status"], "succeeded", "{run}");
    assert_eq!(support::step(&run, "two")["status"], "succeeded", "{run}");
    let expected = marker("this run", RUN_QUOTA, "--quota-run-log-bytes");
    assert_eq!(support::step(&run, "spam")["reason"], expected.as_str());
    let mut stored = 0;
    for step in ["one", "two", "spam"] {
        let lines = support::log_lines(&http, url, run_id, step).await.unwrap();
        stored += text_bytes(&lines);
        if step == "spam" {
            assert_eq!(lines.last().unwrap()["text"], expected.as_str());
            stored -= expected.len() as u64;
        }
    }
    assert!(stored <= RUN_QUOTA, "{stored} bytes stored in the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plue_run_prints_the_marker_and_fails() {
    let _serial = support::serial().await;
    let sandbox = support::Sandbox::new("log-quota-run");
    sandbox.write("flood.plue.py", FLOOD);
    let mut command = sandbox.plue(&[
        "run",
        "flood.plue.py",
        "--runners",
        "1",
        "--quota-step-log-bytes",
        "100000",
    ]);
    command.env_remove("PLUE_DATA_DIR");
    let (pid, mut stdout) = sandbox.spawn_piped("run", command);
    let printed = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let status = sandbox.wait_exit(pid, Duration::from_secs(120)).await;
    let printed = printed.await.unwrap().unwrap();
    assert!(!status.success(), "plue run exits failed");
    let expected = marker("this step", 100_000, "--quota-step-log-bytes");
    assert!(
        printed.contains(&expected),
        "plue run printed no marker:\n{}",
        &printed[printed.len().saturating_sub(3000)..]
    );
    assert!(
        printed.len() < 1_000_000,
        "{} bytes printed for a 100 KB quota",
        printed.len()
    );
}

fn lines(seqs: std::ops::RangeInclusive<u64>, text: &str) -> Vec<LogLine> {
    seqs.map(|seq| LogLine {
        seq,
        stream: Stream::Stdout,
        text: text.to_string(),
        ts_ms: 1,
    })
    .collect()
}

/// Starts a one-step run (of a fork of a repository when `fork`) and claims its attempt.
async fn claimed(executor: &Executor, fork: bool) -> LogAttempt {
    let store = executor.store();
    let repo = if fork {
        Some(RunRepo {
            repo_id: support::create_repo(store).await,
            secrets_allowed: false,
        })
    } else {
        None
    };
    let plan = support::plan("logs", vec![support::bash_step("build", "echo")]);
    let run_id = support::start_plan_run(executor, "/w/logs.plue.py", &plan, repo).await;
    let runner_id = store
        .register_ephemeral_runner(
            &format!("r-{run_id}"),
            "{}",
            &format!("hash-{run_id}-{fork}"),
            now_ms(),
        )
        .await
        .unwrap();
    let claim = store
        .claim(runner_id, &[String::new()], now_ms())
        .await
        .unwrap()
        .expect("a claim");
    assert_eq!(claim.run_id, run_id);
    LogAttempt {
        attempt_id: claim.attempt_id,
        run_id,
        step_run_id: claim.step_run_id,
        number: claim.number,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_count_each_stored_byte_once_on_both_backends() {
    for (store, _dir) in support::stores().await {
        let executor = Executor::new(store, Arc::new(Events::default()), Default::default(), 1000);
        let store = executor.store();
        let at = claimed(&executor, false).await;
        let fresh = store.log_budget(at.attempt_id).await.unwrap().unwrap();
        assert_eq!(
            (fresh.attempt_bytes, fresh.last_seq, fresh.run_bytes),
            (0, 0, 0)
        );
        assert!(fresh.secrets_allowed && !fresh.stop && !fresh.truncated);

        let first = lines(1..=600, "0123456789");
        assert_eq!(
            store
                .append_logs_counted(at, &first, plue_store::BatchEnd::Open)
                .await
                .unwrap(),
            600
        );
        // Sent again (a lost answer), and again with more: only the new lines count.
        assert_eq!(
            store
                .append_logs_counted(at, &first, plue_store::BatchEnd::Open)
                .await
                .unwrap(),
            0
        );
        let more = lines(590..=610, "0123456789");
        assert_eq!(
            store
                .append_logs_counted(at, &more, plue_store::BatchEnd::Open)
                .await
                .unwrap(),
            10
        );
        let budget = store.log_budget(at.attempt_id).await.unwrap().unwrap();
        assert_eq!(
            (budget.attempt_bytes, budget.last_seq, budget.run_bytes),
            (6100, 610, 6100)
        );
        assert_eq!(store.count_logs(at.step_run_id).await.unwrap(), 610);

        // The marker marks the log as cut.
        let cut = lines(611..=611, "log truncated");
        store
            .append_logs_counted(at, &cut, plue_store::BatchEnd::Cut)
            .await
            .unwrap();
        let budget = store.log_budget(at.attempt_id).await.unwrap().unwrap();
        assert!(budget.truncated);
        assert_eq!(budget.attempt_bytes, 6113);

        // Another run's attempt starts from nothing; a fork's run reads as one.
        let fork = claimed(&executor, true).await;
        store
            .append_logs_counted(fork, &lines(1..=1, "x"), plue_store::BatchEnd::Open)
            .await
            .unwrap();
        let budget = store.log_budget(fork.attempt_id).await.unwrap().unwrap();
        assert_eq!((budget.attempt_bytes, budget.run_bytes), (1, 1));
        assert!(!budget.secrets_allowed);
        assert!(store.log_budget(i64::MAX).await.unwrap().is_none());
    }
}
