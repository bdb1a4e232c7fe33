//! `plue-bench claim`: claim latency — from the moment a step becomes claimable to the
//! moment a warm runner has started it — with 4 warm runners, on SQLite and PostgreSQL.
//!
//! Method: `plue serve --runners 4` runs a 200-step chain of `echo claimed` (each step
//! depends on the previous, so exactly one step is ready at a time and three runners are
//! always idle, long-polling). Per step, from the store:
//! - *ready → process output*: the step's first log line `ts` (the runner's clock when its
//!   log sender took the line) − `step_runs.ready_at` (the engine's clock when it decided
//!   to queue the step). It includes committing the queueing transaction, waking the held
//!   polls, the claim transaction, the HTTP answer, preparing the workspace (a copy of a
//!   one-file directory), spawning `bash` and bash's own start-up until `echo` writes.
//! - *ready → started report*: `step_runs.started_at` (set when the runner's `started`
//!   report, sent as soon as the assignment arrives, reached the engine) − `ready_at`; the
//!   engine-side view of a claim, without the process spawn.
//!
//! Baselines in the same run: spawning `true`, spawning the step's own command line
//! (`bash --noprofile --norc -eo pipefail -c 'echo claimed'`, read to its end), and a bare
//! `SELECT 1` round trip through the store's pool on each backend.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use testkit::TempPostgres;

use crate::server::{Backend, Server};
use crate::stats::{from_ms, ms, spread, whole_ms};
use crate::workdir::{self, Workdir};
use crate::Env;

const STEPS: usize = 200;
const RUNNERS: usize = 4;
const SPAWNS: usize = 200;
const PINGS: usize = 1000;

/// How a duration is printed.
type Format = fn(Duration) -> String;

struct Measured {
    backend: &'static str,
    to_output: Vec<Duration>,
    to_started: Vec<Duration>,
    select1: Vec<Duration>,
}

pub(crate) async fn run(env: &Env) -> Result<()> {
    let work = Workdir::new("plue-bench-claim-")?;
    let (postgres, url) = tokio::task::spawn_blocking(|| -> Result<(TempPostgres, String)> {
        let postgres = TempPostgres::start()?;
        let url = postgres.new_database()?;
        Ok((postgres, url))
    })
    .await??;
    let chain = work.write_workflow("claim", &workdir::chain(STEPS, "echo claimed"))?;
    let warmup = work.write_workflow("warmup", &workdir::chain(10, "echo warm"))?;
    let mut results = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres(url)] {
        let server = Server::start(env, &work, &backend, RUNNERS).await?;
        // A short run first, so every runner in the pool has been started and the engine's
        // caches and connections are warm; then wait until 4 runners idle again.
        let warm = server.start_run(&warmup, &work.workspace()).await?;
        server.wait_run(warm).await?;
        server.wait_warm(RUNNERS).await?;
        let run_id = server.start_run(&chain, &work.workspace()).await?;
        server.wait_run(run_id).await?;
        let store = server.store();
        let mut measured = Measured {
            backend: backend.name(),
            to_output: Vec::new(),
            to_started: Vec::new(),
            select1: Vec::new(),
        };
        for step in store.step_runs(run_id).await? {
            let ready = step.ready_at.context("a step without ready_at")?;
            let started = step.started_at.context("a step without started_at")?;
            let first = store.read_logs(step.id, (0, 0), 1).await?;
            let Some(first) = first.first() else {
                bail!("step {} stored no output", step.step_id);
            };
            measured.to_output.push(from_ms(first.ts - ready));
            measured.to_started.push(from_ms(started - ready));
        }
        for _ in 0..PINGS {
            let started = Instant::now();
            if !store.ping().await {
                bail!("SELECT 1 failed on {}", backend.name());
            }
            measured.select1.push(started.elapsed());
        }
        server.stop().await;
        results.push(measured);
    }
    drop(tokio::task::spawn_blocking(move || drop(postgres)).await);

    let spawn_true = spawn_times("true", &[])?;
    let spawn_step = spawn_times("bash", &crate::bash_step::args("echo claimed"))?;

    println!("## claim: step ready → runner starts it ({RUNNERS} warm runners)\n");
    println!(
        "{STEPS}-step chain of `echo claimed` on `plue serve --runners {RUNNERS}`; store \
         timestamps have 1 ms resolution.\n"
    );
    println!("| store | measure | p50 | p99 | max |\n|---|---|---|---|---|");
    for measured in &mut results {
        // Store timestamps have 1 ms resolution; the SELECT 1 baseline is timed here.
        let rows = [
            (
                "ready → first output line",
                &mut measured.to_output,
                whole_ms as Format,
            ),
            (
                "ready → runner's started report stored",
                &mut measured.to_started,
                whole_ms,
            ),
            ("baseline: `SELECT 1` round trip", &mut measured.select1, ms),
        ];
        for (label, samples, format) in rows {
            let (p50, p99, max) = spread(samples);
            println!(
                "| {} | {label} | {} | {} | {} |",
                measured.backend,
                format(p50),
                format(p99),
                format(max)
            );
        }
    }
    for (label, mut samples) in [
        ("baseline: spawn `true` and wait", spawn_true),
        (
            "baseline: spawn the step's bash command, read its output",
            spawn_step,
        ),
    ] {
        let (p50, p99, max) = spread(&mut samples);
        println!("| — | {label} | {} | {} | {} |", ms(p50), ms(p99), ms(max));
    }
    println!();
    Ok(())
}

/// Wall times of spawning `program` with `args` and waiting for it (output read), `SPAWNS`
/// times.
fn spawn_times(program: &str, args: &[String]) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(SPAWNS);
    for _ in 0..SPAWNS {
        let started = Instant::now();
        let output = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            bail!("{program} {args:?} failed: {}", output.status);
        }
        samples.push(started.elapsed());
    }
    Ok(samples)
}
