//! `plue-bench eval`: warm evaluation latency of `examples/ci.plue.py` through the whole
//! sandbox path (pool → worker → validation), p50/p99, and evaluations per second with one
//! worker per core; baseline: spawning `python3` to evaluate the same file with stand-in
//! classes (`bench/baseline_eval.py`).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use evaluator::{EvalContext, EvaluatorPool, Event, Limits, PoolConfig, WorkerCommand};

use crate::stats::{ms, percentile, real_python};
use crate::Env;

pub(crate) async fn run(env: &Env) -> Result<()> {
    let (root, plue) = (env.root.as_path(), env.plue.as_path());
    let file = root.join("examples/ci.plue.py");
    let source = std::fs::read_to_string(&file)?;
    let ctx = EvalContext::local(Event::Push, "main");
    let command = WorkerCommand {
        program: plue.to_path_buf(),
        args: vec!["__eval-worker".into()],
    };

    // Warm latency, one evaluation at a time.
    let pool = EvaluatorPool::start(PoolConfig {
        workers: 1,
        command: command.clone(),
        limits: Limits::default(),
    })
    .await?;
    for _ in 0..200 {
        pool.evaluate("ci.plue.py", &source, &ctx).await?;
    }
    let mut samples = Vec::with_capacity(3000);
    for _ in 0..3000 {
        let started = Instant::now();
        pool.evaluate("ci.plue.py", &source, &ctx).await?;
        samples.push(started.elapsed());
    }
    let (p50, p99) = (
        percentile(&mut samples, 0.50),
        percentile(&mut samples, 0.99),
    );

    // The fixed cost of the path: a one-line workflow.
    let trivial = "def workflow():\n    return Plan(name='x')\n";
    let mut samples = Vec::with_capacity(3000);
    for _ in 0..3000 {
        let started = Instant::now();
        pool.evaluate("trivial.plue.py", trivial, &ctx).await?;
        samples.push(started.elapsed());
    }
    let (trivial50, trivial99) = (
        percentile(&mut samples, 0.50),
        percentile(&mut samples, 0.99),
    );

    // Cold: a different source every time (nothing cached anywhere).
    let mut samples = Vec::with_capacity(1000);
    for i in 0..1000 {
        let fresh = format!("{source}\n# variant {i}\n");
        let started = Instant::now();
        pool.evaluate("ci.plue.py", &fresh, &ctx).await?;
        samples.push(started.elapsed());
    }
    let (cold50, cold99) = (
        percentile(&mut samples, 0.50),
        percentile(&mut samples, 0.99),
    );

    // Throughput with one worker per core.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let pool = EvaluatorPool::start(PoolConfig {
        workers: cores,
        command,
        limits: Limits::default(),
    })
    .await?;
    let total = 6000;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..cores {
        let (pool, source, ctx) = (pool.clone(), source.clone(), ctx.clone());
        tasks.spawn(async move {
            for _ in 0..total / cores {
                pool.evaluate(&format!("ci-{client}.plue.py"), &source, &ctx)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let per_second = total as f64 / started.elapsed().as_secs_f64();

    // Baseline: a python3 process per evaluation.
    let baseline = |program: &str| -> Result<(Duration, Duration)> {
        let mut runs = Vec::new();
        for _ in 0..30 {
            let started = Instant::now();
            let status = Command::new(program)
                .arg(root.join("bench/baseline_eval.py"))
                .arg(&file)
                .stdout(std::process::Stdio::null())
                .status()?;
            if !status.success() {
                bail!("{program} baseline failed");
            }
            runs.push(started.elapsed());
        }
        Ok((percentile(&mut runs, 0.5), percentile(&mut runs, 0.99)))
    };
    let (shim50, shim99) = baseline("python3")?;
    let real = real_python()?;
    let (real50, real99) = baseline(&real)?;

    println!("## eval: warm evaluation of examples/ci.plue.py\n");
    println!("| path | p50 | p99 | ratio (p50) |\n|---|---|---|---|");
    println!(
        "| plue pool (sandboxed worker, validated) | {} | {} | 1× |",
        ms(p50),
        ms(p99)
    );
    println!(
        "| plue pool, a new source each time (cold) | {} | {} | {:.1}× |",
        ms(cold50),
        ms(cold99),
        cold50.as_secs_f64() / p50.as_secs_f64()
    );
    println!(
        "| plue pool, one-line workflow (fixed cost) | {} | {} | {:.1}× |",
        ms(trivial50),
        ms(trivial99),
        trivial50.as_secs_f64() / p50.as_secs_f64()
    );
    println!(
        "| spawn `python3` (PATH, pyenv shim) | {} | {} | {:.0}× slower |",
        ms(shim50),
        ms(shim99),
        shim50.as_secs_f64() / p50.as_secs_f64()
    );
    println!(
        "| spawn `{real}` | {} | {} | {:.0}× slower |",
        ms(real50),
        ms(real99),
        real50.as_secs_f64() / p50.as_secs_f64()
    );
    println!(
        "\nthroughput: {per_second:.0} evaluations/s with {cores} workers ({total} evaluations)\n"
    );
    Ok(())
}
