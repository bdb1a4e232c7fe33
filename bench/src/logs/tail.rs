//! Live-tail latency: a step prints its own clock (`time.time_ns()`) every 10 ms, 300
//! times, while the benchmark follows `GET /api/runs/{id}/steps/tick/logs` with
//! `Accept: text/event-stream`. Per `line` event: receive time − the printed time, so the
//! figure covers the pipe, the runner's batching and HTTP post, the store insert, the
//! engine's wake-up of the SSE stream, its store read and the event reaching the client.
//!
//! Baseline: the same script's stdout read straight from a pipe by this process.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use testkit::TempPostgres;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::server::{Backend, Server};
use crate::stats::real_python;
use crate::workdir::{self, Workdir};
use crate::Env;

/// Lines the step prints, one every 10 ms.
pub(crate) const TICKS: usize = 300;
const SCRIPT: &str =
    "import time\nfor i in range(300):\n    print(time.time_ns(), flush=True)\n    time.sleep(0.01)\n";

/// (label, lines received, latencies).
type Tail = (String, usize, Vec<Duration>);

pub(crate) async fn run(env: &Env, work: &Workdir, postgres: &TempPostgres) -> Result<Vec<Tail>> {
    let file = work.write_workflow("tick", &workdir::single("python", "tick", SCRIPT))?;
    let mut results = vec![pipe().await?];
    let url = postgres.new_database()?;
    for backend in [Backend::Sqlite, Backend::Postgres(url)] {
        let server = Server::start(env, work, &backend, 1).await?;
        let run_id = server.start_run(&file, &work.workspace()).await?;
        let latencies = follow(&server, run_id).await?;
        server.wait_run(run_id).await?;
        server.stop().await;
        results.push((
            format!("{}: printed → SSE `line` event received", backend.name()),
            latencies.len(),
            latencies,
        ));
    }
    Ok(results)
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn since(printed_ns: i128, later_ns: i128) -> Duration {
    Duration::from_nanos(u64::try_from(later_ns - printed_ns).unwrap_or(0))
}

/// Follows the step's SSE stream to its `end` event; returns printed → received per stdout
/// line.
async fn follow(server: &Server, run_id: i64) -> Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    server
        .follow_lines(run_id, "tick", |line| {
            let received = now_ns();
            if line["stream"] != "stdout" {
                return Ok(());
            }
            let printed: i128 = line["text"]
                .as_str()
                .and_then(|t| t.trim().parse().ok())
                .with_context(|| format!("unexpected line {line}"))?;
            latencies.push(since(printed, received));
            Ok(())
        })
        .await?;
    Ok(latencies)
}

/// The baseline: the script's stdout read from a pipe.
async fn pipe() -> Result<Tail> {
    let mut child = tokio::process::Command::new(real_python()?)
        .args(["-u", "-c", SCRIPT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut samples = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let received = now_ns();
        let printed: i128 = line.trim().parse().context("a printed time")?;
        samples.push(since(printed, received));
    }
    child.wait().await?;
    Ok((
        "baseline: the same script read from a pipe".to_string(),
        samples.len(),
        samples,
    ))
}
