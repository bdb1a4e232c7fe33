//! `plue-bench scale`: is the cost of a step flat as a run grows? `plue run --runners 2`
//! (SQLite) of a chain and of a fan-out/fan-in (one root, N − 2 middle steps, one join) of
//! `true` steps at 100 and at 10,000 steps; per step: the wall time less the fixed cost of
//! a one-step run, ÷ (N − 1), and the run's own first claim → finish ÷ N from the store.
//! The goal: 10,000 within 1.25× of 100.
//!
//! The engine's peak memory: `VmHWM` of the `plue run` process (engine, store and
//! evaluator; its runners are processes of their own), read from `/proc` every 50 ms while
//! it runs — the high-water mark only grows, so the last reading is the peak to within the
//! last 50 ms.
//!
//! Then the same shapes through `plue serve --runners 2` on a throw-away PostgreSQL
//! (`--max-steps 10000`; each runner takes one step and is replaced, as `plue serve`'s
//! runners are): the run's own first claim → finish ÷ N (its wall, read by polling the
//! store every 50 ms, is too coarse for a 100-step run), and `VmHWM` of the `plue serve`
//! process.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use plue_store::Store;
use tokio::process::Command;

use crate::server::{Backend, Server};
use crate::stats::{from_ms, ms, percentile, tail};
use crate::workdir::{self, Workdir};
use crate::Env;

const SIZES: [usize; 2] = [100, 10_000];
/// Runs of each size under 1,000 steps (the median is kept); larger ones run once.
const SMALL_RUNS: usize = 3;

struct Measured {
    wall: Duration,
    in_run: Duration,
    peak_kib: u64,
}

/// What runs the shapes.
enum Engine<'a> {
    /// A `plue run` child per run.
    Run(&'a Env),
    /// One `plue serve` child for every run.
    Serve(&'a Server),
}

impl Engine<'_> {
    /// One run of `file`; for `plue serve`, its peak memory so far.
    async fn measure(&self, work: &Workdir, file: &Path) -> Result<Measured> {
        match self {
            Engine::Run(env) => plue_run(env, work, file).await,
            Engine::Serve(server) => {
                let mut measured = serve_run(server, work, file).await?;
                measured.peak_kib = vm_hwm(server.pid()).unwrap_or(0);
                Ok(measured)
            }
        }
    }
}

/// Which per-step figure the ratio is taken of.
#[derive(Clone, Copy, PartialEq)]
enum Judged {
    /// (wall − one-step run) ÷ (N − 1).
    Marginal,
    /// The run's first claim → its end ÷ N.
    InRun,
}

pub(crate) async fn run(env: &Env) -> Result<()> {
    let work = Workdir::new("plue-bench-scale-")?;
    println!("## scale: per-step cost at 100 and 10,000 steps (`plue run --runners 2`, SQLite)\n");
    let ratios = shapes(&Engine::Run(env), &work, "", Judged::Marginal, |fixed| {
        format!(
            "Marginal per step = (wall − one-step run {fixed}) ÷ (N − 1); in-run = first claim → \
             run finished (store) ÷ N; peak = the `plue run` process's `VmHWM` (engine, store, \
             evaluator; not its runner processes)."
        )
    })
    .await?;
    for (shape, ratio) in ratios {
        println!(
            "{shape}: per step at 10,000 / at 100 = **{ratio:.2}×** (goal ≤ 1.25×: {}).",
            verdict(ratio)
        );
    }
    println!();
    serve_on_postgres(env, &work).await
}

/// The shapes again through `plue serve` on PostgreSQL.
async fn serve_on_postgres(env: &Env, work: &Workdir) -> Result<()> {
    let (postgres, url) =
        tokio::task::spawn_blocking(|| -> Result<(testkit::TempPostgres, String)> {
            let postgres = testkit::TempPostgres::start()?;
            let url = postgres.new_database()?;
            Ok((postgres, url))
        })
        .await??;
    let server = Server::start_with(
        env,
        work,
        &Backend::Postgres(url),
        2,
        &["--max-steps", "10000"],
        &[],
    )
    .await?;
    println!("## scale on `plue serve --runners 2`, PostgreSQL\n");
    // In-run, not marginal: the wall is read by polling the store every 50 ms, too coarse
    // for a 100-step run.
    let ratios = shapes(
        &Engine::Serve(&server),
        work,
        "serve-",
        Judged::InRun,
        |fixed| {
            format!(
            "Marginal per step = (wall from `POST /api/runs` to the run's end − one-step run \
             {fixed}) ÷ (N − 1); in-run as above; peak = the `plue serve` process's `VmHWM` so far."
        )
        },
    )
    .await;
    server.stop().await;
    drop(postgres);
    for (shape, ratio) in ratios? {
        println!(
            "{shape} (serve, PostgreSQL): in-run per step at 10,000 / at 100 = **{ratio:.2}×** (goal ≤ 1.25×: {}).",
            verdict(ratio)
        );
    }
    println!();
    Ok(())
}

fn verdict(ratio: f64) -> &'static str {
    if ratio <= 1.25 {
        "met"
    } else {
        "not met"
    }
}

/// Runs each shape at each of [`SIZES`] on `engine` (workflow files named with `prefix`),
/// after a one-step run's fixed cost; prints `intro` (given that cost) and a table, and
/// returns per shape the per-step figure `judged` at 10,000 steps ÷ at 100.
async fn shapes(
    engine: &Engine<'_>,
    work: &Workdir,
    prefix: &str,
    judged: Judged,
    intro: impl Fn(String) -> String,
) -> Result<Vec<(&'static str, f64)>> {
    let one = work.write_workflow(&format!("{prefix}one"), &workdir::chain(1, "true"))?;
    let mut fixed = Vec::new();
    for _ in 0..SMALL_RUNS {
        fixed.push(engine.measure(work, &one).await?.wall);
    }
    let fixed = percentile(&mut fixed, 0.5);
    println!("{}\n", intro(ms(fixed)));
    println!("| shape | steps | wall | marginal/step | in-run/step | engine peak RSS |");
    println!("|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for (shape, make) in [
        ("chain", workdir::chain as fn(usize, &str) -> String),
        ("fan-out/fan-in", workdir::fan),
    ] {
        let mut per_step = Vec::new();
        for steps in SIZES {
            let file = work.write_workflow(
                &format!("{prefix}{}-{steps}", shape.replace('/', "-")),
                &make(steps, "true"),
            )?;
            let runs = if steps < 1000 { SMALL_RUNS } else { 1 };
            let mut measured = Vec::new();
            for _ in 0..runs {
                measured.push(engine.measure(work, &file).await?);
            }
            measured.sort_by_key(|m| m.wall);
            let m = measured.swap_remove(runs / 2);
            let marginal = m.wall.saturating_sub(fixed).as_secs_f64() / (steps - 1) as f64;
            let in_run = m.in_run.as_secs_f64() / steps as f64;
            println!(
                "| {shape} | {steps} | {} | {:.3} ms | {:.3} ms | {:.1} MiB |",
                ms(m.wall),
                marginal * 1000.0,
                in_run * 1000.0,
                m.peak_kib as f64 / 1024.0
            );
            per_step.push(if judged == Judged::Marginal {
                marginal
            } else {
                in_run
            });
        }
        ratios.push((shape, per_step[1] / per_step[0]));
    }
    println!();
    Ok(ratios)
}

/// One run of `file` through `server`: wall from its creation to its end, and in-run time
/// (peak memory is read by the caller).
async fn serve_run(server: &Server, work: &Workdir, file: &Path) -> Result<Measured> {
    let started = Instant::now();
    let run_id = server.start_run(file, &work.workspace()).await?;
    let run = server.wait_run(run_id).await?;
    Ok(Measured {
        wall: started.elapsed(),
        in_run: from_ms(
            run.finished_at.context("unfinished run")? - run.started_at.context("unstarted run")?,
        ),
        peak_kib: 0,
    })
}

/// One `plue run` of `file` with a fresh data directory: wall, in-run time, peak RSS.
async fn plue_run(env: &Env, work: &Workdir, file: &Path) -> Result<Measured> {
    let data_dir = work.fresh("run-data");
    let started = Instant::now();
    let mut child = Command::new(&env.plue)
        .arg("run")
        .arg(file)
        .args(["--runners", "2", "--max-steps", "10000"])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("NO_COLOR", "1")
        .current_dir(work.workspace())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id().context("plue run has no pid")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let reading = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text).await;
        text
    });
    let mut peak_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak_kib = peak_kib.max(vm_hwm(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wall = started.elapsed();
    let stderr = reading.await?;
    if !status.success() {
        bail!(
            "plue run {} failed ({status}):\n{}",
            file.display(),
            tail(&stderr)
        );
    }
    let store = Store::open_data_dir(&data_dir).await?;
    let run = store
        .list_runs(1)
        .await?
        .pop()
        .context("plue run stored no run")?;
    store.close().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(Measured {
        wall,
        in_run: from_ms(
            run.finished_at.context("unfinished run")? - run.started_at.context("unstarted run")?,
        ),
        peak_kib,
    })
}

/// `VmHWM` of `pid` in KiB.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
