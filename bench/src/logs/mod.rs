//! `plue-bench logs`: how fast log lines get into the store, and how soon a follower sees
//! them.
//!
//! - [`ingest`] — raw store ingest: `Store::append_logs` of 1,000,000 lines in batches of
//!   5,000 (the runner's batches are up to 40,000 lines), on SQLite and PostgreSQL, one
//!   writer and four at once; zero loss checked with `count_logs`.
//! - [`end_to_end`] — a step running `seq 1 1000000`: through `plue run` (SQLite, which
//!   also prints every line) and `plue serve` (SQLite and PostgreSQL); lines/s from the
//!   step's start to the run's end, stored count checked.
//! - [`tail`] — live-tail latency: a step prints its own clock every 10 ms for 3 s while
//!   the benchmark follows the step's SSE log stream; latency = receive time − printed
//!   time.
//!
//! Baselines: `seq 1 1000000 > file` (the floor for getting those lines anywhere), and the
//! same printing script read straight from a pipe (the floor for tail latency).

mod end_to_end;
mod ingest;
mod tail;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use testkit::TempPostgres;

use crate::stats::{ms, percentile, thousands};
use crate::workdir::Workdir;
use crate::Env;

/// Lines per ingest measurement.
pub(crate) const LINES: u64 = 1_000_000;

pub(crate) async fn run(env: &Env) -> Result<()> {
    let work = Workdir::new("plue-bench-logs-")?;
    let postgres = tokio::task::spawn_blocking(TempPostgres::start).await??;
    let floor = file_floor(&work).await?;
    let floor_rate = LINES as f64 / floor.as_secs_f64();

    println!("## logs: ingest and live tail\n");
    println!("### ingest: {} lines\n", thousands(LINES as f64));
    println!("| path | time | lines/s | vs the file floor | stored |\n|---|---|---|---|---|");
    println!(
        "| baseline: `seq 1 {LINES} > file` (median of 3) | {} | {} | 1× | — |",
        ms(floor),
        thousands(floor_rate)
    );
    let print = |label: &str, result: &ingest::Ingested| {
        println!(
            "| {label} | {} | {} | {:.1}× slower | {} of {} |",
            ms(result.elapsed),
            thousands(result.rate()),
            floor_rate / result.rate(),
            thousands(result.stored as f64),
            thousands(result.expected as f64),
        );
    };
    for (label, result) in ingest::run(&work, &postgres).await? {
        print(&label, &result);
    }
    for (label, result) in end_to_end::run(env, &work, &postgres).await? {
        print(&label, &result);
    }
    println!();

    let tails = tail::run(env, &work, &postgres).await?;
    println!(
        "### live tail: {} lines printed every 10 ms, followed over SSE\n",
        tail::TICKS
    );
    println!("| path | received | p50 | p99 | max |\n|---|---|---|---|---|");
    for (label, received, mut samples) in tails {
        let p50 = percentile(&mut samples, 0.5);
        let p99 = percentile(&mut samples, 0.99);
        println!(
            "| {label} | {received} of {} | {} | {} | {} |",
            tail::TICKS,
            ms(p50),
            ms(p99),
            ms(samples[samples.len() - 1])
        );
    }
    println!();
    drop(tokio::task::spawn_blocking(move || drop(postgres)).await);
    Ok(())
}

/// Median of 3 runs of `seq 1 LINES > file`.
async fn file_floor(work: &Workdir) -> Result<Duration> {
    let file = work.path().join("seq.txt");
    let mut walls = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let status = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(format!("seq 1 {LINES} > {}", file.display()))
            .status()
            .await?;
        if !status.success() {
            bail!("seq failed: {status}");
        }
        walls.push(started.elapsed());
    }
    let _ = std::fs::remove_file(&file);
    Ok(percentile(&mut walls, 0.5))
}
