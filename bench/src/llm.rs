//! `plue-bench llm`: token latency of an `llm` step. A local Claude server
//! (`testkit::claude`) streams [`TOKENS`] text deltas, one every [`GAP`], and notes when it
//! hands each `content_block_delta` to the connection; the benchmark follows the step's
//! logs over SSE (`GET /api/runs/{id}/steps/answer/logs`, `Accept: text/event-stream`).
//! Per token: SSE `line` event received − delta written, so the figure covers the runner's
//! stream parsing, its log batching and HTTP post, the engine's store insert, the wake-up
//! of the SSE stream, its store read and the event reaching the client. Goal: p99 ≤ 50 ms.
//!
//! Correctness check: the stored `token` lines concatenate to the streamed text exactly
//! (the text has multi-byte characters, `\n`s and edge spaces).
//!
//! Baseline: the same stream read directly by this process (reqwest + eventsource), the
//! floor for getting a delta anywhere.

use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};
use testkit::claude::{FakeClaude, Turn};
use testkit::TempPostgres;

use crate::server::{Backend, Server};
use crate::stats::{ms, spread};
use crate::workdir::Workdir;
use crate::Env;

/// Text deltas per run.
const TOKENS: usize = 1000;
/// The pause before each delta.
const GAP: Duration = Duration::from_millis(5);
const KEY: &str = "sk-ant-bench-not-a-real-key";

/// The deltas: words, some ending lines, some multi-byte, some starting with spaces.
fn pieces() -> Vec<String> {
    (0..TOKENS)
        .map(|i| match i % 7 {
            0 => format!(" tok{i}"),
            1 => "é".to_string(),
            2 => format!("w{i}\n"),
            3 => " ".to_string(),
            4 => "✓ ".to_string(),
            5 => format!("{i}"),
            _ => "\u{1F980}".to_string(),
        })
        .collect()
}

fn answer() -> testkit::claude::Reply {
    Turn::new()
        .paced_text_block(&pieces(), GAP)
        .usage(50, TOKENS as u64)
        .reply()
}

/// `(label, token lines received, latencies, stored text exact)`.
type Measured = (String, usize, Vec<Duration>, bool);

pub(crate) async fn run(env: &Env) -> Result<()> {
    let work = Workdir::new("plue-bench-llm-")?;
    let postgres = tokio::task::spawn_blocking(TempPostgres::start).await??;
    let mut results = vec![direct().await?];
    let url = postgres.new_database()?;
    for backend in [Backend::Sqlite, Backend::Postgres(url)] {
        results.push(through_plue(env, &work, &backend).await?);
    }

    println!("## llm: token latency\n");
    println!(
        "{TOKENS} text deltas streamed by a local Claude server, one every {} ms; \
         latency = delta written by the server → token line received over SSE.\n",
        GAP.as_millis()
    );
    println!(
        "| path | received | p50 | p99 | max | stored text exact |\n|---|---|---|---|---|---|"
    );
    for (label, received, mut samples, exact) in results {
        if samples.is_empty() {
            bail!("{label}: no samples");
        }
        let (p50, p99, max) = spread(&mut samples);
        println!(
            "| {label} | {received} of {TOKENS} | {} | {} | {} | {} |",
            ms(p50),
            ms(p99),
            ms(max),
            if exact { "yes" } else { "NO" }
        );
    }
    println!();
    drop(tokio::task::spawn_blocking(move || drop(postgres)).await);
    Ok(())
}

/// The floor: this process reads the fake server's stream itself.
async fn direct() -> Result<Measured> {
    let server = FakeClaude::start(vec![answer()]);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", server.url()))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(json!({"model": "m", "max_tokens": 1, "messages": [], "stream": true}).to_string())
        .send()
        .await?
        .error_for_status()?;
    let mut events = response.bytes_stream().eventsource();
    let mut received = Vec::new();
    let mut text = String::new();
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| anyhow!("reading the stream: {e}"))?;
        let at = SystemTime::now();
        let data: Value = serde_json::from_str(&event.data)?;
        if let Some(piece) = data["delta"]["text"].as_str() {
            text.push_str(piece);
            received.push(at);
        }
    }
    let latencies = latencies(&server, &received)?;
    Ok((
        "baseline: the stream read directly by a client".into(),
        received.len(),
        latencies,
        text == pieces().concat(),
    ))
}

/// A `plue serve` with one runner runs a one-step workflow whose llm step talks to the
/// fake server; the benchmark follows the step's SSE log stream.
async fn through_plue(env: &Env, work: &Workdir, backend: &Backend) -> Result<Measured> {
    let server = FakeClaude::start(vec![answer()]);
    let workflow =
        "def workflow():\n    return Plan(name=\"llm-bench\", triggers=[Trigger.manual()], steps=[\n        \
         Step.llm(\"answer\", prompt=\"Stream.\", tools=[]),\n    ])\n";
    let file = work.write_workflow("llm", workflow)?;
    let secret = format!("ANTHROPIC_API_KEY={KEY}");
    // Where the API is, is the engine's configuration (passed to its local runners).
    let url = server.url().to_string();
    let plue = Server::start_with(
        env,
        work,
        backend,
        1,
        &["--secret", &secret],
        &[("ANTHROPIC_BASE_URL", url.as_str())],
    )
    .await?;
    let run_id = plue.start_run(&file, &work.workspace()).await?;
    let received = follow(&plue, run_id).await?;
    plue.wait_run(run_id).await?;
    let stored = stored_text(&plue, run_id).await?;
    plue.stop().await;
    let latencies = latencies(&server, &received)?;
    Ok((
        format!(
            "{}: delta written → token line received over SSE",
            backend.name()
        ),
        received.len(),
        latencies,
        stored == pieces().concat(),
    ))
}

/// Receive times of the step's `token` lines, in order, until the stream's `end`.
async fn follow(server: &Server, run_id: i64) -> Result<Vec<SystemTime>> {
    let mut received = Vec::new();
    server
        .follow_lines(run_id, "answer", |line| {
            if line["stream"] == "token" {
                received.push(SystemTime::now());
            }
            Ok(())
        })
        .await?;
    Ok(received)
}

/// The step's stored token lines, concatenated.
async fn stored_text(server: &Server, run_id: i64) -> Result<String> {
    let steps = server.store().step_runs(run_id).await?;
    let step = steps
        .iter()
        .find(|s| s.step_id == "answer")
        .context("no step 'answer'")?;
    let lines = server.store().read_logs(step.id, (0, 0), 100_000).await?;
    Ok(lines
        .iter()
        .filter(|l| l.stream == "token")
        .map(|l| l.text.as_str())
        .collect())
}

/// Received − written for the i-th text delta.
fn latencies(server: &FakeClaude, received: &[SystemTime]) -> Result<Vec<Duration>> {
    let written: Vec<SystemTime> = server
        .sent()
        .into_iter()
        .filter(|s| s.event["delta"]["type"] == "text_delta")
        .map(|s| s.at)
        .collect();
    if received.len() > written.len() {
        bail!(
            "{} token lines for {} deltas written",
            received.len(),
            written.len()
        );
    }
    Ok(received
        .iter()
        .zip(&written)
        .map(|(got, sent)| got.duration_since(*sent).unwrap_or_default())
        .collect())
}
