//! End-to-end test of the order of a step's log lines across its two streams: a bash step
//! and a python step write numbered lines alternating stdout and stderr as fast as they
//! can, and the engine's stored lines (`GET /api/runs/{id}/steps/{step}/logs`) are exactly
//! in the written order, with seqs 1, 2, 3, … and each line on its own stream.
//!
//! regression (issue 54): the runner read stdout and stderr in two tasks that each took up
//! to 256 KiB per read, so a stderr line was stored hundreds of lines after the stdout
//! lines written after it, with the same timestamp.

use crate::support;
use std::time::Duration;

use crate::support::{client, log_lines, start_run, step, wait_final, Sandbox};
use serde_json::Value;

const LINES: usize = 30_000;
const PYTHON_LINES: usize = 5_000;

fn workflow() -> String {
    format!(
        r#"def workflow():
    return Plan(name='order', triggers=[Trigger.manual()], steps=[
        Step.bash('bash', 'for i in $(seq 1 {LINES}); do echo "o $i"; echo "e $i" >&2; done'),
        Step.python('py', "import sys\nfor i in range(1, {py}):\n    sys.stdout.write(f'o {{i}}\\n')\n    sys.stderr.write(f'e {{i}}\\n')"),
    ])
"#,
        py = PYTHON_LINES + 1
    )
}

/// `(stream, text)` of every stored line, after checking the seqs count up from 1.
fn stored(lines: &[Value]) -> Vec<(String, String)> {
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.iter().copied().eq(1..=seqs.len() as u64),
        "seqs are not 1, 2, 3, …"
    );
    lines
        .iter()
        .map(|l| {
            let text = l["text"].as_str().unwrap().to_owned();
            (l["stream"].as_str().unwrap().to_owned(), text)
        })
        .collect()
}

fn written(count: usize) -> Vec<(String, String)> {
    (1..=count)
        .flat_map(|i| {
            [
                ("stdout".to_owned(), format!("o {i}")),
                ("stderr".to_owned(), format!("e {i}")),
            ]
        })
        .collect()
}

/// The first place where `got` leaves `want`, for the message.
fn first_difference(got: &[(String, String)], want: &[(String, String)]) -> String {
    match got.iter().zip(want).position(|(g, w)| g != w) {
        Some(at) => format!(
            "line {at}: stored {:?}, written {:?} (of {} stored, {} written)",
            got.get(at..(at + 5).min(got.len())),
            &want[at..(at + 5).min(want.len())],
            got.len(),
            want.len()
        ),
        None => format!("{} stored, {} written", got.len(), want.len()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_are_stored_in_the_order_the_step_wrote_them_across_streams() {
    let _serial = support::serial().await;
    let sandbox = Sandbox::new("log-order");
    sandbox.write("ws/order.plue.py", &workflow());
    let ws = sandbox.path("ws");
    let http = client();
    let engine = sandbox.serve_local("2", &["--heartbeat-ms", "200"]).await;
    let url = engine.url.as_str();

    let run_id = start_run(&http, url, &ws.join("order.plue.py"), &ws).await;
    let run = wait_final(&http, url, run_id, Duration::from_secs(300)).await;
    for (id, count) in [("bash", LINES), ("py", PYTHON_LINES)] {
        assert_eq!(step(&run, id)["status"], "succeeded", "{run}");
        let lines = log_lines(&http, url, run_id, id)
            .await
            .expect("the engine answers");
        let got = stored(&lines);
        let want = written(count);
        assert!(got == want, "{id}: {}", first_difference(&got, &want));
    }
}
