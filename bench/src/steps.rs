//! `plue-bench steps`: what `plue run` adds per step, on a 200-step chain (each step
//! depends on the previous) and a 500-step fan-out/fan-in (one root, 498 steps depending
//! on it, one step depending on all of those), every step running `true`, and on a
//! 200-step chain of `python` steps running `pass`.
//!
//! Baseline: the same number of processes spawned one after the other by a shell loop:
//! `bash --noprofile --norc -eo pipefail -c true` (exactly what a runner starts for a bash
//! step), or `python3 -u -c pass` with the runner's interpreter for the python chain. Each
//! `plue run` gets a fresh `--data-dir` and runs from a tiny directory (it is copied into
//! every step's workspace), with `NO_COLOR=1`; wall time includes everything the command
//! does (store, evaluator and runner start-up, evaluation, shutdown). The fixed part is
//! measured separately with a one-step workflow of the same kind (for `python`, that
//! includes the warm interpreter's start), so the marginal cost a step is a warm step's:
//! the figure to set beside `plue-bench floor`'s. The run's own timestamps in the store
//! show where a step's time goes.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use plue_store::{StepRunRow, Store};
use tokio::process::Command;

use crate::stats::{from_ms, ms, ms_signed, percentile, tail, whole_ms};
use crate::workdir::{self, Workdir};
use crate::Env;

/// Whole-command runs per configuration (the median is reported).
const RUNS: usize = 3;
/// Local runner counts tried (`plue run --runners`).
const RUNNERS: [usize; 2] = [1, 4];

struct Shape {
    name: &'static str,
    steps: usize,
    source: String,
    /// The one-step workflow of the same kind (the fixed cost).
    one: String,
    /// What the shell loop runs once a step, and how the table names it.
    baseline: Vec<String>,
    baseline_label: &'static str,
    chain: bool,
}

/// One `plue run` as the store recorded it.
struct Recorded {
    wall: Duration,
    /// `runs.started_at` (first claim) → `runs.finished_at`.
    in_run: Duration,
    /// Per step: `started_at` → `finished_at` (runner's start report → completion report).
    step: Vec<Duration>,
    /// Per step: `ready_at` → `started_at` (queued → the runner's start report arrived).
    ready_to_start: Vec<Duration>,
    /// Per step after the first, chains only: previous step's `finished_at` → `started_at`.
    gap: Vec<Duration>,
}

pub(crate) async fn run(env: &Env) -> Result<()> {
    let work = Workdir::new("plue-bench-steps-")?;
    let mut bash = vec!["bash".to_string()];
    bash.extend(crate::bash_step::args("true"));
    let python = runner::agent::python_for_steps(false)?
        .display()
        .to_string();
    let shapes = [
        Shape {
            name: "chain",
            steps: 200,
            source: workdir::chain(200, "true"),
            one: workdir::chain(1, "true"),
            baseline: bash.clone(),
            baseline_label: "bash -c true",
            chain: true,
        },
        Shape {
            name: "fan-out/fan-in",
            steps: 500,
            source: workdir::fan(500, "true"),
            one: workdir::chain(1, "true"),
            baseline: bash,
            baseline_label: "bash -c true",
            chain: false,
        },
        Shape {
            name: "python chain",
            steps: 200,
            source: workdir::chain_of("python", 200, "pass"),
            one: workdir::chain_of("python", 1, "pass"),
            baseline: vec![python, "-u".into(), "-c".into(), "pass".into()],
            baseline_label: "python3 -u -c pass",
            chain: true,
        },
    ];
    println!("## steps: per-step overhead of `plue run`\n");
    println!(
        "Median of {RUNS} runs each. Overhead per step = (plue wall − shell-loop wall) / \
         steps; marginal = (plue wall − one-step plue wall) / (steps − 1), i.e. without the \
         fixed start-up and shutdown cost; in-run = first claim → run finished (store \
         timestamps) / steps.\n"
    );
    println!(
        "| workflow | path | wall | overhead/step vs shell | ratio | marginal/step | in-run/step |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut details = Vec::new();
    for shape in &shapes {
        let file_name = shape.name.replace(['/', ' '], "-");
        let file = work.write_workflow(&file_name, &shape.source)?;
        let one = work.write_workflow(&format!("{file_name}-one"), &shape.one)?;
        let baseline = shell_loop(&work, &shape.baseline, shape.steps).await?;
        let n = shape.steps as f64;
        println!(
            "| {} ({} steps) | shell loop, `{}` × {} | {} | — | 1× | {} | — |",
            shape.name,
            shape.steps,
            shape.baseline_label,
            shape.steps,
            ms(baseline),
            ms_signed(baseline.as_secs_f64() / n)
        );
        for runners in RUNNERS {
            let mut fixed = Vec::new();
            for _ in 0..RUNS {
                fixed.push(plue_run(env, &work, &one, runners, false).await?.wall);
            }
            let fixed = percentile(&mut fixed, 0.5);
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                runs.push(plue_run(env, &work, &file, runners, shape.chain).await?);
            }
            runs.sort_by_key(|r| r.wall);
            let median = runs.swap_remove(RUNS / 2);
            let wall = median.wall.as_secs_f64();
            println!(
                "| {} ({} steps) | `plue run --runners {runners}` | {} | {} | {:.1}× | {} | {} |",
                shape.name,
                shape.steps,
                ms(median.wall),
                ms_signed((wall - baseline.as_secs_f64()) / n),
                wall / baseline.as_secs_f64(),
                ms_signed((wall - fixed.as_secs_f64()) / (n - 1.0)),
                ms_signed(median.in_run.as_secs_f64() / n),
            );
            details.push((shape.name, runners, fixed, median));
        }
    }
    println!(
        "\nWhere a step's time goes (median run; store timestamps, 1 ms resolution; \
         started = the runner's start report reached the engine, finished = its completion \
         report did):\n"
    );
    println!(
        "| workflow | runners | one-step `plue run` (fixed cost) | step started→finished p50 / p99 | ready→started p50 / p99 | previous finished→started p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, runners, fixed, mut run) in details {
        let pair = |samples: &mut Vec<Duration>| {
            if samples.is_empty() {
                "—".to_string()
            } else {
                format!(
                    "{} / {}",
                    whole_ms(percentile(samples, 0.5)),
                    whole_ms(percentile(samples, 0.99))
                )
            }
        };
        println!(
            "| {name} | {runners} | {} | {} | {} | {} |",
            ms(fixed),
            pair(&mut run.step),
            pair(&mut run.ready_to_start),
            pair(&mut run.gap)
        );
    }
    println!();
    Ok(())
}

/// Median wall time of `bash -c 'for i in $(seq N); do COMMAND; done'`, the command's
/// words passed as the loop's arguments (never parsed by the shell).
async fn shell_loop(work: &Workdir, command: &[String], steps: usize) -> Result<Duration> {
    let script = format!(r#"for i in $(seq {steps}); do "$@"; done"#);
    let mut walls = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let status = Command::new("bash")
            .args(["-c", &script, "shell-loop"])
            .args(command)
            .current_dir(work.workspace())
            .status()
            .await?;
        if !status.success() {
            bail!("the shell loop of `{}` failed: {status}", command.join(" "));
        }
        walls.push(started.elapsed());
    }
    Ok(percentile(&mut walls, 0.5))
}

/// One `plue run` of `file` with a fresh data directory, and what the store recorded.
async fn plue_run(
    env: &Env,
    work: &Workdir,
    file: &Path,
    runners: usize,
    chain: bool,
) -> Result<Recorded> {
    let data_dir = work.fresh("run-data");
    let started = Instant::now();
    let output = Command::new(&env.plue)
        .arg("run")
        .arg(file)
        .args(["--runners", &runners.to_string()])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("NO_COLOR", "1")
        .current_dir(work.workspace())
        .stdin(Stdio::null())
        .output()
        .await?;
    let wall = started.elapsed();
    if !output.status.success() {
        bail!(
            "plue run {} failed ({}):\n{}",
            file.display(),
            output.status,
            tail(&output.stderr)
        );
    }
    let store = Store::open_data_dir(&data_dir).await?;
    let run = store
        .list_runs(1)
        .await?
        .pop()
        .context("plue run stored no run")?;
    let steps = store.step_runs(run.id).await?;
    store.close().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let at = |ms: Option<i64>, what: &str, step: &StepRunRow| {
        ms.with_context(|| format!("step {} has no {what}", step.step_id))
    };
    let mut recorded = Recorded {
        wall,
        in_run: from_ms(
            run.finished_at.context("unfinished run")? - run.started_at.context("unstarted run")?,
        ),
        step: Vec::new(),
        ready_to_start: Vec::new(),
        gap: Vec::new(),
    };
    for (i, step) in steps.iter().enumerate() {
        let (ready, start, finish) = (
            at(step.ready_at, "ready_at", step)?,
            at(step.started_at, "started_at", step)?,
            at(step.finished_at, "finished_at", step)?,
        );
        recorded.step.push(from_ms(finish - start));
        recorded.ready_to_start.push(from_ms(start - ready));
        if chain && i > 0 {
            let previous = at(steps[i - 1].finished_at, "finished_at", &steps[i - 1])?;
            recorded.gap.push(from_ms(start - previous));
        }
    }
    Ok(recorded)
}
